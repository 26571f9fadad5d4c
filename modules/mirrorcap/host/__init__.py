"""The capture host's bootstrap: render.py turns scripts/ and a capture into the
files a host receives (user data, bake.sh, env file), from manifest.py's list of
what goes where; user_data_size.py holds the user data to EC2's limit; tree.py
writes them to rendered/ without touching anything mirrorcap did not write."""
