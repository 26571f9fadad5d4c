# /etc/mirrorcap/mirrorcap.env as a dict (KEY=value lines, quotes dropped; not run by a shell).
def read_env(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key] = value.strip().strip('"')
    return values
