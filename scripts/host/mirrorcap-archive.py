#!/usr/bin/python3
"""mirrorcap-archive: upload closed pcaps to the S3 archive; delete only what S3 confirmed.

  archive upload      every closed pcap not yet confirmed, oldest first (mirrorcap-archive.service)
  archive retention   delete confirmed pcaps: by age, and the oldest while under the floor
                      (mirrorcap-retention.service of a capture that archives)
  archive status      the backlog and the uploader's last run, as JSON

Closed: every pcap but the newest of each configured VNI (tcpdump writes it).
Key: MIRRORCAP_ARCHIVE_KEY (capture, VNI, the UTC day in the pcap's name, this
instance's ID from IMDSv2, the file name). Upload: the AWS CLI's put-object with
the file's SHA-256, which S3 checks against what it received (400 BadDigest when
they differ): confirmed = the CLI succeeded and S3 answered with that same
SHA-256. Confirmations (name, size, mtime, SHA-256, key) go to state.json in
the unit's StateDirectory; a pcap that changed since is not confirmed. A failed
run stops at the first failure and waits 1, 2, 4 then 5 minutes between runs.
Runs as the capture user with no capability; capture never waits for it.
Python 3.9 stdlib only (Amazon Linux 2023's system Python).
"""
import base64
import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

STATE_DIR = "/var/lib/mirrorcap/archive"  # StateDirectory=mirrorcap/archive
BACKOFF_SECONDS = host.ARCHIVE_BACKOFF_SECONDS
UPLOAD_TIMEOUT_SECONDS = 3600  # one pcap (a few GiB at most)
PUT_MAX_BYTES = 5 << 30  # S3's limit for one PUT: a larger pcap needs a shorter rotate_seconds
# A pcap's packet index (mirrorcap_index.SUFFIX) is uploaded under MIRRORCAP_ARCHIVE_INDEX_KEY
# (contract.ARCHIVE_INDEX_KEY: a prefix of its own); a failed one's marker stays on the host.
INDEX_SUFFIXES = (host.INDEX_SUFFIX, host.INDEX_FAILED_SUFFIX)


def log(message):
    print("mirrorcap-archive: " + message, file=sys.stderr, flush=True)


# --- pure: names, keys, what is closed, confirmed, late, deletable -------------------
def archive_key(key_format, prefix, pattern, name, instance):
    """The S3 key of pcap `name` written by `instance`, None for a name that is not a pcap's."""
    named = host.pcap_start(pattern, name)
    if named is None:
        return None
    vni, start = named
    return key_format.format(capture=prefix, vni=vni, date=start.strftime("%Y-%m-%d"), instance=instance, file=name)


def closed_pcaps(names, pattern, vnis):
    """The pcaps among `names` that tcpdump no longer writes: all but the newest of each configured VNI."""
    pcaps = sorted(n for n in names if host.pcap_start(pattern, n) is not None)
    newest = {}
    for name in pcaps:  # names carry the UTC start time: sorted, the last of a VNI is the newest
        newest[host.pcap_start(pattern, name)[0]] = name
    writing = {newest[int(v)] for v in vnis if int(v) in newest}
    return [n for n in pcaps if n not in writing]


def confirmed(record, size, mtime_ns):
    """True when an upload confirmation is for the file as it is now."""
    return bool(record) and record.get("size") == size and record.get("mtime_ns") == mtime_ns


def backlog(files, confirmations, pattern, vnis, now):
    """Closed pcaps not confirmed: (count, age in seconds of the oldest since it was closed, its name).
    `files`: {name: (size, mtime_ns)}."""
    late = [(files[n][1], n) for n in closed_pcaps(files, pattern, vnis)
            if not confirmed(confirmations.get(n), *files[n])]
    if not late:
        return 0, 0, None
    mtime_ns, name = min(late)
    return len(late), max(0, int(now - mtime_ns / 1e9)), name


def deletable(files, confirmations, pattern, vnis, now, retention_days, bytes_to_free):
    """What retention deletes, in order: [(name, reason)]. Only closed pcaps whose upload is
    confirmed (they are in S3: deleting them loses nothing): those older than retention_days,
    then the oldest others until `bytes_to_free` bytes are freed (the free-space floor, or
    the room a capture that stopped on a full volume needs). `files`: {name: (size, mtime_ns)}."""
    cutoff = now - retention_days * 86400
    done, freed = [], 0
    candidates = sorted((files[n][1], n) for n in closed_pcaps(files, pattern, vnis)
                        if confirmed(confirmations.get(n), *files[n]))
    rest = []
    for mtime_ns, name in candidates:
        if mtime_ns / 1e9 < cutoff:
            done.append((name, "older than %s days, archived" % retention_days))
            freed += files[name][0]
        else:
            rest.append(name)
    for name in rest:
        if freed >= bytes_to_free:
            break
        done.append((name, "free space under the floor, archived"))
        freed += files[name][0]
    return done


def backoff_seconds(failed_runs):
    return BACKOFF_SECONDS[min(failed_runs, len(BACKOFF_SECONDS)) - 1] if failed_runs > 0 else 0


# --- the host ---------------------------------------------------------------------
class Settings:
    def __init__(self, env):
        self.directory = env["MIRRORCAP_CAPTURE_DIR"]
        self.pattern = env["MIRRORCAP_PCAP_PATTERN"]
        self.vnis = env["MIRRORCAP_VNIS"].split()
        self.bucket = env["MIRRORCAP_ARCHIVE_BUCKET"]
        self.region = env["MIRRORCAP_ARCHIVE_REGION"]
        self.prefix = env["MIRRORCAP_ARCHIVE_PREFIX"]
        self.key_format = env["MIRRORCAP_ARCHIVE_KEY"]
        self.index_key_format = env["MIRRORCAP_ARCHIVE_INDEX_KEY"]
        self.backlog_seconds = int(env["MIRRORCAP_ARCHIVE_BACKLOG_SECONDS"])
        self.retention_days = int(env["MIRRORCAP_RETENTION_DAYS"])
        self.min_free_percent = float(env.get("MIRRORCAP_MIN_FREE_PERCENT", "0"))
        self.min_free_gib = float(env.get("MIRRORCAP_MIN_FREE_GIB", "0"))


def list_files(directory, pattern):
    """{name: (size, mtime_ns)} of the regular files named like pcaps directly in `directory`."""
    found = {}
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and host.pcap_start(pattern, entry.name) is not None:
            st = entry.stat(follow_symlinks=False)
            found[entry.name] = (st.st_size, st.st_mtime_ns)
    return found


def load_state(state_dir=STATE_DIR):
    try:
        with open(os.path.join(state_dir, "state.json")) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}
    state.setdefault("confirmed", {})
    state.setdefault("indexes", {})  # uploads of packet indexes, as "confirmed" is of pcaps
    state.setdefault("failed_runs", 0)
    state.setdefault("retry_at", 0)
    return state


def save_state(state, state_dir=STATE_DIR):
    path = os.path.join(state_dir, "state.json")
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def instance_id():
    return host.imds("/latest/meta-data/instance-id").decode().strip()


def sha256_b64(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def put_object(s, path, key, checksum):
    """Upload one file; None when S3 confirmed it with `checksum`, else why not."""
    r, error = host.aws_cli(["s3api", "put-object", "--region", s.region, "--bucket", s.bucket, "--key", key, "--body", path,
                             "--checksum-algorithm", "SHA256", "--checksum-sha256", checksum, "--output", "json"],
                            attempts=3, connect_timeout=10, read_timeout=120, timeout=UPLOAD_TIMEOUT_SECONDS)
    if error:
        return error
    try:
        answered = json.loads(r.stdout or "{}").get("ChecksumSHA256")
    except ValueError:
        answered = None
    if answered != checksum:
        return "S3 answered SHA-256 %r for %s, not %r: not confirmed" % (answered, key, checksum)
    return None


def upload(s, state, now, force=False):
    if not force and now < state["retry_at"]:
        log("backing off after %d failed run(s): next try at %s" % (
            state["failed_runs"], dt.datetime.fromtimestamp(state["retry_at"], dt.timezone.utc).strftime("%H:%M:%SZ")))
        return
    files = list_files(s.directory, s.pattern)
    # Forget confirmations of files that are gone (retention deleted them).
    state["confirmed"] = {n: r for n, r in state["confirmed"].items() if n in files}
    pending = sorted((files[n][1], n) for n in closed_pcaps(files, s.pattern, s.vnis)
                     if not confirmed(state["confirmed"].get(n), *files[n]))
    indexes = index_files(s.directory, closed_pcaps(files, s.pattern, s.vnis))
    state.setdefault("indexes", {})
    state["indexes"] = {n: r for n, r in state["indexes"].items() if n in indexes}
    pending_indexes = [n for n in sorted(indexes) if not confirmed(state["indexes"].get(n), *indexes[n])]
    run = dict(at=now, uploaded=0, pending=len(pending), error=None)
    state["last_run"] = run
    if not pending and not pending_indexes:
        state.update(failed_runs=0, retry_at=0)
        return
    try:
        if not state.get("instance_id"):
            state["instance_id"] = instance_id()
    except (OSError, ValueError) as e:
        return failed(state, run, now, "cannot read the instance ID from IMDSv2: %s" % e)
    for mtime_ns, name in pending:
        path = os.path.join(s.directory, name)
        key = archive_key(s.key_format, s.prefix, s.pattern, name, state["instance_id"])
        if files[name][0] > PUT_MAX_BYTES:
            # Never deleted unconfirmed: it stays in the backlog, which health reports.
            run["error"] = "%s is %d bytes, over S3's 5 GiB for one PUT: lower host.rotate_seconds" % (name, files[name][0])
            log("NOT UPLOADED: " + run["error"])
            continue
        try:
            st = os.stat(path)
            checksum = sha256_b64(path)
        except OSError as e:
            log("%s: %s (skipped)" % (name, e))
            continue
        error = put_object(s, path, key, checksum)
        if error:
            return failed(state, run, now, "%s -> s3://%s/%s: %s" % (name, s.bucket, key, error))
        if (st.st_size, st.st_mtime_ns) != (files[name][0], mtime_ns):
            log("%s changed while it was uploaded: not confirmed, uploaded again next run" % name)
            continue
        state["confirmed"][name] = dict(key=key, sha256=checksum, size=st.st_size, mtime_ns=st.st_mtime_ns, at=time.time())
        run["uploaded"] += 1
        run["pending"] -= 1
        save_state(state)  # each confirmation at once: retention may delete it from now on
        log("archived %s -> s3://%s/%s (%d bytes, SHA-256 %s confirmed by S3)" % (name, s.bucket, key, st.st_size, checksum))
    for name in pending_indexes:
        path = os.path.join(s.directory, name + INDEX_SUFFIXES[0])
        key = archive_key(s.index_key_format, s.prefix, s.pattern, name, state["instance_id"])
        try:
            st = os.stat(path)
            checksum = sha256_b64(path)
        except OSError as e:
            log("%s: %s (skipped)" % (os.path.basename(path), e))
            continue
        error = put_object(s, path, key, checksum)
        if error:
            return failed(state, run, now, "%s -> s3://%s/%s: %s" % (os.path.basename(path), s.bucket, key, error))
        state["indexes"][name] = dict(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns)
        save_state(state)
        log("archived the index of %s -> s3://%s/%s" % (name, s.bucket, key))
    state.update(failed_runs=0, retry_at=0)


def index_files(directory, names):
    """{pcap name: (size, mtime_ns) of its packet index} for the pcaps among `names` that have one."""
    found = {}
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name + INDEX_SUFFIXES[0]), follow_symlinks=False)
        except OSError:
            continue
        found[name] = (st.st_size, st.st_mtime_ns)
    return found


def remove_indexes(directory, name):
    """A deleted pcap's index (or failure marker) goes with it."""
    for suffix in INDEX_SUFFIXES:
        try:
            os.unlink(os.path.join(directory, name + suffix))
        except FileNotFoundError:
            pass


def failed(state, run, now, error):
    state["failed_runs"] += 1
    state["retry_at"] = now + backoff_seconds(state["failed_runs"])
    run["error"] = error
    log("UPLOAD FAILED (%d run(s) in a row; %d pcap(s) wait; next try in %ds): %s"
        % (state["failed_runs"], run["pending"], backoff_seconds(state["failed_runs"]), error))


def below_floor(s, need=0):
    """Bytes to free to have the floor, and at least `need` bytes, free; 0 when there."""
    st = os.statvfs(s.directory)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    goal = max(total * s.min_free_percent / 100.0, s.min_free_gib * (1 << 30), need)
    return max(0, int(goal - free) + 1) if free < goal else 0


def retention(s, state, now):
    if not host.on_its_own_volume(s.directory):
        log("%s is not a mounted volume (check mirrorcap-storage): nothing to do" % s.directory)
        return
    lock = os.open(s.directory, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the timer's run and a capture's run, one after the other
        stopped, need = host.not_writing(s.vnis)
        writing = [v for v in s.vnis if v not in stopped]  # a stopped capture's newest pcap is closed
        files = list_files(s.directory, s.pattern)
        plan = deletable(files, state["confirmed"], s.pattern, writing, now, s.retention_days, below_floor(s, need))
        for name, reason in plan:
            try:
                os.unlink(os.path.join(s.directory, name))
                log("deleted %s (%s)" % (name, reason))
            except FileNotFoundError:
                pass
            remove_indexes(s.directory, name)
        for entry in os.scandir(s.directory):  # an index written while its pcap was being deleted
            for suffix in INDEX_SUFFIXES:
                if entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False) \
                        and host.pcap_start(s.pattern, entry.name[:-len(suffix)]) is not None \
                        and not os.path.exists(os.path.join(s.directory, entry.name[:-len(suffix)])):
                    remove_indexes(s.directory, entry.name[:-len(suffix)])
        count, age, oldest = backlog(files, state["confirmed"], s.pattern, writing, now)
        if below_floor(s, need):
            log("WARNING: free space still under the floor: %d closed pcap(s) are not archived yet (never deleted)%s; "
                "files mirrorcap did not write are never deleted either"
                % (count, ", the oldest %s (%ds)" % (oldest, age) if oldest else ""))
        log("done: %d file(s) deleted, %d kept" % (len(plan), len(files) - len(plan)))
    finally:
        os.close(lock)


def status(s, state, now):
    files = list_files(s.directory, s.pattern) if os.path.isdir(s.directory) else {}
    count, age, oldest = backlog(files, state["confirmed"], s.pattern, s.vnis, now)
    return dict(backlog=count, oldest_age_seconds=age, oldest=oldest, backlog_limit_seconds=s.backlog_seconds,
                confirmed=len([n for n in files if confirmed(state["confirmed"].get(n), *files[n])]),
                failed_runs=state["failed_runs"], retry_at=state["retry_at"], last_run=state.get("last_run"),
                bucket=s.bucket)


def main(argv):
    if len(argv) < 2 or argv[1] not in ("upload", "retention", "status"):
        print("usage: mirrorcap-archive upload [--now] | retention | status", file=sys.stderr)
        return 2
    try:
        s = Settings(host.read_env())
    except (OSError, KeyError, ValueError) as e:
        log("cannot read %s: %s" % (host.ENV_FILE, e))
        return 2
    state, now = load_state(), time.time()
    if argv[1] == "status":
        print(json.dumps(status(s, state, now), indent=2))
        return 0
    if argv[1] == "retention":
        retention(s, state, now)
        return 0
    if not host.on_its_own_volume(s.directory):
        log("%s is not a mounted volume (check mirrorcap-storage): nothing to upload" % s.directory)
        return 0
    upload(s, state, now, force="--now" in argv[2:])
    save_state(state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
