"""The capture host's bootstrap: render.py turns scripts/ and a capture into the
files a host receives (user data, bake.sh, env file); tree.py writes them to
rendered/ without touching anything mirrorcap did not write."""
