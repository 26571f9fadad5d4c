"""Packet index benchmark: what indexing costs at rotation, and what `mirrorcap find` reads.

    .venv/bin/python bench/find_index.py [--mib 200] [--flows 5000] [--hosts 10 --days 15 --files-per-day 24
                                         --file-kib 128] [--out bench/out/find_index.json]

Generates one pcap shaped like mirrored traffic (inner Ethernet frames as the
capture writes them: TCP flows whose packets are 45 % bare ACKs, 10 % ~300 B,
45 % full 1448 B segments, interleaved; DNS over UDP; some IPv6), then measures,
in one run and on one core:
  - baseline: reading the file and walking its records (what any reader pays);
  - index:    mirrorcap_index.py in a child process, as the host runs it at rotation (CPU
              of the child: Python's and numpy's start-up included); and, for comparison,
              the plain walk (no numpy) in this process, which must write the same index.
Reported: CPU seconds each, the index's rate in Gbit/s of pcap per core, the share
of one core indexing 1 Gbit/s of mirrored traffic takes (goal <= 25 %), the index's
size as a share of the pcap (goal <= 1 %); then `find` for one flow (DuckDB over the
index, ranged reads of the pcap): seconds, index bytes read, pcap bytes read, as a
share of the pcap. Then a fleet's archive, scaled (10 hosts x 15 days, 24 files of 128 KiB
per host and day by default: 3600 files), in one directory: `find` for one flow over all
days and over the last hour, and `tcpdump -r` over every file for the same answer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import struct
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "aws"), str(ROOT / "modules")]

from mirrorcap.contract import PCAP_PATTERN  # noqa: E402
from mirrorcap.find.hostindex import indexer  # noqa: E402
from mirrorcap.find.query import parse  # noqa: E402
from mirrorcap.find.search import collect, search  # noqa: E402


def generate(path: Path, mib: float, flows: int, seed: int = 5, t0_us: int = 1_764_770_000 * 10 ** 6, needle: int = 0) -> int:
    """A pcap of about `mib` MiB from `flows` flows; `needle` packets of one more flow
    (10.200.0.1:5432 > 10.200.0.2:40000) spread through it."""
    r = random.Random(seed)
    eth4 = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00"
    eth6 = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x86\xdd"
    heads = []
    for i in range(flows):
        sp, dp = r.randrange(1024, 65535), r.choice([443, 80, 5432, 6379, 8080])
        if i % 10 == 9:
            src, dst = bytes([0xfd] + [0] * 14 + [i % 250]), bytes([0xfd] + [0] * 13 + [i >> 8 & 255, i & 255])
            heads.append((eth6, 6, src, dst, sp, dp))
        else:
            heads.append((eth4, 4, bytes([10, 0, i >> 8 & 255, i & 255]), bytes([10, 1, r.randrange(256), 7]), sp, dp))
    payload = bytes(r.randrange(256) for _ in range(1500))
    target, written, t = int(mib * (1 << 20)), 24, t0_us
    needles = sorted(r.randrange(target) for _ in range(needle))
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        while written < target:
            eth, v, src, dst, sp, dp = heads[min(int(r.paretovariate(1.2)) - 1, flows - 1) if r.random() < .5 else r.randrange(flows)]
            size = r.choices([0, 280, 1448], [45, 10, 45])[0]
            if r.random() < .03:  # DNS
                l4 = struct.pack(">HHHH", sp, 53, 8 + 60, 0) + payload[:60]
                proto = 17
            else:
                l4 = struct.pack(">HHIIBBHHH", sp, dp, 1, 1, 0x50, 0x10, 65535, 0, 0) + payload[:size]
                proto = 6
            if v == 4:
                ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, src, dst)
            else:
                ip = struct.pack(">IHBB16s16s", 6 << 28, len(l4), proto, 64, src, dst)
            frame = eth + ip + l4
            if needles and written >= needles[0]:
                needles.pop(0)
                l4 = struct.pack(">HHIIBBHHH", 5432, 40000, 1, 1, 0x50, 0x18, 65535, 0, 0) + payload[:200]
                frame = eth4 + struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, 6, 0,
                                           bytes([10, 200, 0, 1]), bytes([10, 200, 0, 2])) + l4
            t += r.choice([1, 2, 5])
            f.write(struct.pack("<IIII", t // 10 ** 6, t % 10 ** 6, len(frame), len(frame)) + frame)
            written += 16 + len(frame)
    return written


def cpu(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.process_time() - c0, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--flows", type=int, default=5000)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--days", type=int, default=15)
    ap.add_argument("--files-per-day", type=int, default=24, help="rotations per host and day (scaled: 24 = hourly)")
    ap.add_argument("--file-kib", type=int, default=128, help="each pcap's size (scaled down from a real fleet's)")
    ap.add_argument("--file-flows", type=int, default=20, help="flows in each of the fleet's pcaps")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each CPU measurement (the least is reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "find_index.json")
    args = ap.parse_args()
    ix = indexer()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pcap = d / "vni7_2026-12-03T14-00-00Z.pcap"
        size = generate(pcap, args.mib, args.flows)

        def baseline():
            data = pcap.read_bytes()
            meta = ix.header(data)
            return sum(1 for _ in ix.records(data, meta))

        # Each CPU figure is the least of ROUNDS runs, taken in turn (a busy machine only adds).
        tiny = d / "vni7_tiny.pcap"
        generate(tiny, 0.01, 10, seed=9)
        real_numpy = ix._numpy
        base, host, startup, plain, inproc = [], [], [], [], []
        for _ in range(args.rounds):
            packets, c, _ = cpu(baseline)
            base.append(c)
            (line, rows), c, index_wall = cpu(lambda: ix.write(str(pcap)))
            inproc.append(c)
            host.append(host_index_cpu(pcap))
            startup.append(host_index_cpu(tiny))  # the child's Python and numpy start-up, paid once a pcap
            ix._numpy = lambda: None  # the plain walk, as a host without python3-numpy would run it
            try:
                (plain_line, plain_rows), c, _ = cpu(lambda: ix.write(str(pcap), str(d / "plain.idx.json.gz")))
                plain.append(c)
            finally:
                ix._numpy = real_numpy
        base_cpu, index_cpu, host_cpu, startup_cpu, plain_cpu = map(min, (base, inproc, host, startup, plain))
        index_size = Path(ix.index_path(str(pcap))).stat().st_size
        assert (plain_line, plain_rows) == (line, rows), "the plain walk wrote another index"
        busiest = max(rows, key=lambda r: r["packets"])
        quiet = min((r for r in rows if r["fam"] == "ip" and r["sp"]), key=lambda r: r["packets"])
        finds = {}
        for name, row in (("busiest flow", busiest), ("quietest flow", quiet)):
            src = ".".join(str(b) for b in bytes.fromhex(row["sa"]))
            query = f"src host {src} and src port {row['sp']}"
            node = parse(query)
            (found_pkts, found), find_cpu, find_wall = cpu(lambda: _find(d, node))
            finds[name] = dict(query=query, seconds=round(find_wall, 3), packets=len(found_pkts), flow_packets=row["packets"],
                               index_bytes=found.index_bytes, pcap_bytes_read=found.fetched_bytes,
                               pcap_share=round(found.fetched_bytes / size, 5))
    rate_gbps = size * 8 / host_cpu / 1e9
    per_gbit = size * 8 / 1e9
    steady = (host_cpu - startup_cpu) / per_gbit  # a core's share per Gbit/s once started
    result = dict(rounds=args.rounds, pcap_bytes=size, packets=packets, flows=line["flows"], mean_frame=round(line["bytes"] / packets),
                  baseline_cpu_s=round(base_cpu, 3), index_cpu_s=round(index_cpu, 3), index_wall_s=round(index_wall, 3),
                  host_index_cpu_s=round(host_cpu, 3), plain_walk_index_cpu_s=round(plain_cpu, 3),
                  index_gbit_per_core_s=round(rate_gbps, 3), core_share_at_1gbps=round(1 / rate_gbps, 3),
                  host_startup_cpu_s=round(startup_cpu, 3), core_share_at_1gbps_steady=round(steady, 3),
                  core_share_at_1gbps_600s_rotation=round(steady + startup_cpu / 600, 3),
                  core_share_at_1gbps_plain_walk=round(plain_cpu / per_gbit, 3),
                  core_share_at_1gbps_baseline=round(base_cpu / per_gbit, 3),
                  index_bytes=index_size, index_share=round(index_size / size, 5), find=finds)
    result["fleet"] = fleet(args.hosts, args.days, args.files_per_day, args.file_kib, args.file_flows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def host_index_cpu(pcap: Path) -> float:
    """CPU seconds (user + system) of `python3 mirrorcap_index.py PCAP` in a child, as the host's capture
    watcher runs it at rotation: the interpreter's and numpy's start-up included."""
    import resource
    import subprocess
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "host" / "mirrorcap_index.py"), str(pcap)], check=True,
                   env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"), capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def fleet(hosts: int, days: int, per_day: int, kib: int, flows: int) -> dict:
    """A fleet's pcaps over `days` (scaled: `per_day` files of `kib` KiB per host and day), one directory
    as a host or a download would hold them, indexed as hosts index them; then one flow found over
    all days and over the last hour, against tcpdump -r over every file for the same answer."""
    import subprocess
    ix = indexer()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        now_us = int(time.time()) * 10 ** 6
        step = 86400 * 10 ** 6 // per_day
        paths, t_index, archived = [], 0.0, []
        for h in range(hosts):
            for k in range(days * per_day):
                # the newest files start 10 minutes before the run: "the last hour" holds them
                t0 = now_us - (days * per_day - 1 - k) * step - 600 * 10 ** 6 + h * 1000
                start = datetime.fromtimestamp(t0 // 10 ** 6, timezone.utc)
                instance, name = f"i-{h:017x}", start.strftime(PCAP_PATTERN.replace("{vni}", str(ARCHIVE_VNI)))
                p = d / f"{instance}-{name}"
                archived.append((p, instance, name, start))
                generate(p, kib / 1024, flows, seed=h * 100000 + k, t0_us=t0, needle=1 if k % 7 == 0 or k == days * per_day - 1 else 0)
                c = time.process_time()
                ix.write(str(p))
                t_index += time.process_time() - c
                paths.append(p)
        pcap_bytes = sum(p.stat().st_size for p in paths)
        index_bytes = sum(Path(ix.index_path(str(p))).stat().st_size for p in paths)
        out = dict(hosts=hosts, days=days, files=len(paths), file_kib=kib, file_flows=flows, pcap_bytes=pcap_bytes, index_bytes=index_bytes,
                   index_share=round(index_bytes / pcap_bytes, 5), index_cpu_s=round(t_index, 2))
        for name, query in (("one flow, all days", "host 10.200.0.1 and port 5432"),
                            ("one flow, last hour", "host 10.200.0.1 and port 5432 and after 1h ago")):
            node = parse(query)
            (pkts, found), _c, wall = cpu(lambda: _find(d, node))
            out[name] = dict(query=query, seconds=round(wall, 2), packets=len(pkts), index_bytes_read=found.index_bytes,
                             pcap_bytes_read=found.fetched_bytes, pcap_share=round(found.fetched_bytes / pcap_bytes, 5))
        t = time.perf_counter()
        n = 0
        for p in paths:
            data = subprocess.run(["tcpdump", "-r", str(p), "-w", "-", "host 10.200.0.1 and port 5432"], capture_output=True).stdout
            n += sum(1 for _ in ix.records(data, ix.header(data))) if data else 0
        out["tcpdump -r every file"] = dict(seconds=round(time.perf_counter() - t, 2), packets=n, pcap_bytes_read=pcap_bytes)
        out.update(archive(archived, d, pcap_bytes, days))
        return out


ARCHIVE_VNI = 77  # the VNI of tests/aws/test_window_archive.py's capture "web" (an archive {} fleet)


def archive(files, work: Path, pcap_bytes: int, days: int) -> dict:
    """The same pcaps as capture "web"'s archive in S3 (moto, in this process: no network, so the
    times are of the work, not of S3's latency), each host's index at its archive key: `mirrorcap
    find --capture` (indexes, then ranged GETs) against `mirrorcap window` (every pcap of the window
    downloaded, merged, filtered with tcpdump) for the same flow over every day."""
    import boto3
    from moto import mock_aws
    from typer.testing import CliRunner

    from mirrorcap.cli import app
    from mirrorcap.contract import ARCHIVE_INDEX_KEY, ARCHIVE_KEY
    from test_window_archive import INVENTORY, REGION
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    ix = indexer()
    inventory = work / "bench.hcl"
    inventory.write_text(INVENTORY)
    bucket = "mirrorcap-bench-archive"
    out, index_bytes = {}, 0
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        for p, instance, name, start in files:
            fields = dict(capture="web", vni=ARCHIVE_VNI, date=start.date().isoformat(), instance=instance, file=name)
            s3.put_object(Bucket=bucket, Key=ARCHIVE_KEY.format(**fields), Body=p.read_bytes())
            idx = work / "archive-index.tmp"
            ix.write(str(p), str(idx), vni=ARCHIVE_VNI)  # what the host wrote (its file is vni<N>_...)
            s3.put_object(Bucket=bucket, Key=ARCHIVE_INDEX_KEY.format(**fields), Body=idx.read_bytes())
            index_bytes += idx.stat().st_size
        query, bpf = "host 10.200.0.1 and port 5432", "host 10.200.0.1 and port 5432"
        runner = CliRunner()
        found = work / "found.pcap"
        t = time.perf_counter()
        r = runner.invoke(app, ["find", query, "--capture", "web", "--bucket", bucket, "--inventory", str(inventory), "--out", str(found)])
        wall = time.perf_counter() - t
        assert r.exit_code == 0, r.output
        m = re.search(r"(\d+) packet\(s\); read (\d+) B of indexes and (\d+) B of pcaps \((\d+) B", r.output)
        # Every index of the window is fetched (its file line decides whether its flows are read at all).
        out["archive: find one flow, all days"] = dict(query=query, seconds=round(wall, 2), packets=int(m.group(1)),
                                                      index_bytes_fetched=index_bytes, index_bytes_read_by_duckdb=int(m.group(2)),
                                                      pcap_bytes_fetched=int(m.group(4)), pcap_share=round(int(m.group(4)) / pcap_bytes, 5))
        middle = files[0][3] + (files[-1][3] - files[0][3]) / 2
        window = work / "window.pcap"
        t = time.perf_counter()
        r = runner.invoke(app, ["window", "--capture", "web", "--bucket", bucket, "--inventory", str(inventory),
                                "--at", middle.isoformat(), "--window", f"{days // 2 + 1}d", "--bpf", bpf, "--out", str(window)])
        wall = time.perf_counter() - t
        assert r.exit_code == 0, r.output
        data = window.read_bytes()
        out["archive: mirrorcap window, same flow"] = dict(seconds=round(wall, 2), packets=sum(1 for _ in ix.records(data, ix.header(data))),
                                                          pcap_bytes_fetched=pcap_bytes)
    return out


def _find(d, node):
    found = search(d, node)
    return collect(found, node), found


if __name__ == "__main__":
    sys.exit(main())
