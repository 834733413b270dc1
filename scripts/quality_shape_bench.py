#!/usr/bin/env python3
"""SecantusDB CPU per quality record, by document shape (issue #5).

Starts a private secantusd-py per case (fresh storage under --root, port --port, 127.0.0.1),
writes the quality records of S scans x F frames the way the MongoWriter batches them (one
`update` command per scan per batch of --batch records, scans interleaved) and reports the
server's CPU (utime+stime from /proc/PID/stat) spent on the writes, plus a read-back check.

    .local/venv/bin/python scripts/quality_shape_bench.py --scans 32 --frames 300 --repeat 3

Shapes:
  per_frame      one document per frame, upsert on {scan_id, seq} (unique index) - before
  per_frame_id   one document per frame, upsert on _id "scan:seq" (no secondary index)
  bucket_N       one document per scan per N consecutive seqs, _id "scan:bucket",
                 upsert with $set of "f.<seq>" per record (idempotent on (scan, seq))
  insert_frame, insert_bucket_N
                 the same documents written with `insert` (floors: not idempotent alone)
A case is shape[@B]: B records per scan per write command (default --batch).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid

import bson
import pymongo

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def record(scan, seq):
    return {
        "scan_id": scan,
        "seq": seq,
        "captured_at_us": 1_764_000_000_000_000 + seq * 33_333,
        "width": 256,
        "height": 192,
        "valid_fraction": 0.987654,
        "median_depth_m": 0.31234,
        "pose_jump_mm": 0.5 + (seq % 7) * 0.1,
        "pose_jump_deg": 0.01 * (seq % 5),
        "accepted": True,
        "warnings": [],
    }


def compact(r):
    """The per-frame fields kept inside a bucket (scan_id and seq are in the bucket/key)."""
    return {k: v for k, v in r.items() if k not in ("scan_id", "seq")}


def insert_for(shape, scan, recs):
    """Insert-only shapes (not idempotent on their own: a retry meets duplicate keys)."""
    if shape == "insert_frame":
        return [dict(r, _id=f"{scan}:{r['seq']}") for r in recs]
    if shape.startswith("insert_bucket_"):
        n = int(shape.split("_")[2])
        docs = {}
        for r in recs:
            b = (r["seq"] - 1) // n
            d = docs.setdefault(b, {"_id": f"{scan}:{b}", "scan_id": scan, "first_seq": b * n + 1, "f": {}})
            d["f"][str(r["seq"])] = compact(r)
        return list(docs.values())
    return None


def updates_for(shape, scan, recs):
    if shape == "per_frame":
        return [{"q": {"scan_id": scan, "seq": r["seq"]}, "u": {"$set": r}, "upsert": True} for r in recs]
    if shape == "per_frame_id":
        return [{"q": {"_id": f"{scan}:{r['seq']}"}, "u": {"$set": r}, "upsert": True} for r in recs]
    if shape.startswith("bucket_"):
        n = int(shape.split("_")[1])
        by_bucket = {}
        for r in recs:
            by_bucket.setdefault((r["seq"] - 1) // n, []).append(r)
        ups = []
        for b, rs in by_bucket.items():
            s = {"scan_id": scan, "first_seq": b * n + 1}
            for r in rs:
                s[f"f.{r['seq']}"] = compact(r)
            ups.append({"q": {"_id": f"{scan}:{b}"}, "u": {"$set": s}, "upsert": True})
        return ups
    raise SystemExit(f"unknown shape {shape}")


def setup(shape, db):
    if shape == "per_frame":
        db.command({"createIndexes": "q", "indexes": [{"key": {"scan_id": 1, "seq": 1}, "name": "scan_seq", "unique": True}]})
    elif "bucket_" in shape:
        db.command({"createIndexes": "q", "indexes": [{"key": {"scan_id": 1, "first_seq": 1}, "name": "scan_first"}]})


def read_back(shape, db, scans, frames):
    got = 0
    for scan in scans:
        if "bucket_" in shape:
            seqs = set()
            for d in db.q.find({"scan_id": scan}):
                seqs.update(int(k) for k in d["f"])
            got += len(seqs)
            assert seqs == set(range(1, frames + 1)), (scan, len(seqs))
        else:
            got += db.q.count_documents({"scan_id": scan})
    return got


def run_case(args, case, i):
    shape, _, b = case.partition("@")
    batch = int(b) if b else args.batch
    path = os.path.join(args.root, f"{shape}-{batch}-{i}")
    shutil.rmtree(path, ignore_errors=True)
    conf = os.path.join(args.root, "empty.toml")
    open(conf, "w").write("# flags carry every setting\n")
    proc = subprocess.Popen(
        [args.secantusd, "--config", conf, "--host", "127.0.0.1", "--port", str(args.port), "--storage-path", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{args.port}/?directConnection=true", serverSelectionTimeoutMS=30000)
        client.admin.command("ping")
        db = client.bench
        setup(shape, db)
        time.sleep(1.0)
        idle0 = cpu_s(proc.pid)
        time.sleep(2.0)
        idle_rate = (cpu_s(proc.pid) - idle0) / 2.0
        scans = [str(uuid.uuid4()) for _ in range(args.scans)]
        c0, w0 = cpu_s(proc.pid), time.monotonic()
        commands = statements = 0
        for start in range(1, args.frames + 1, batch):
            seqs = range(start, min(start + batch, args.frames + 1))
            for scan in scans:
                recs = [record(scan, s) for s in seqs]
                docs = insert_for(shape, scan, recs)
                if docs is not None:
                    reply = db.command({"insert": "q", "documents": docs, "ordered": False})
                    statements += len(docs)
                else:
                    ups = updates_for(shape, scan, recs)
                    reply = db.command({"update": "q", "updates": ups, "ordered": False})
                    statements += len(ups)
                assert not reply.get("writeErrors"), reply
                commands += 1
        wall = time.monotonic() - w0
        cpu = cpu_s(proc.pid) - c0 - idle_rate * wall
        # a retried batch converges: rewrite the first batch of every scan, nothing changes
        for scan in scans:
            if insert_for(shape, scan, []) is None:
                db.command({"update": "q", "updates": updates_for(shape, scan, [record(scan, s) for s in range(1, batch + 1)]), "ordered": False})
        got = read_back(shape, db, scans, args.frames)
        assert got == args.scans * args.frames, got
        docs = db.q.estimated_document_count()
        size = sum(len(bson.encode(d)) for d in db.q.find())
        return {"cpu": cpu, "wall": wall, "commands": commands, "statements": statements, "docs": docs, "size": size, "idle": idle_rate}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(path, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scans", type=int, default=32)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--batch", type=int, default=8, help="records per scan per write (250 ms at 30 fps ~ 8)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--port", type=int, default=27100)
    p.add_argument("--root", default="/tmp/secx")
    p.add_argument("--secantusd", default=os.path.join(os.path.dirname(sys.executable), "secantusd-py"))
    p.add_argument("shapes", nargs="*", default=["per_frame", "per_frame_id", "bucket_32", "bucket_64", "bucket_128", "bucket_256"],
                   help="shape[@records per write], e.g. bucket_32@32")
    args = p.parse_args()
    os.makedirs(args.root, exist_ok=True)
    n = args.scans * args.frames
    print(f"{args.scans} scans x {args.frames} frames = {n} records, batch {args.batch}; uptime: {os.popen('uptime').read().strip()}")
    results = {}
    for i in range(args.repeat):
        for shape in args.shapes:  # interleaved, so load drift hits every shape alike
            r = run_case(args, shape, i)
            results.setdefault(shape, []).append(r)
            print(f"  run {i} {shape:18s} cpu {r['cpu']:6.2f} s  wall {r['wall']:6.2f} s  commands {r['commands']}  "
                  f"statements {r['statements']}  docs {r['docs']}  bytes {r['size']}  idle {r['idle']:.3f} core", flush=True)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    base = statistics.median(r["cpu"] for r in results[args.shapes[0]])
    print(f"{'shape@batch':18s} {'median cpu s':>12s} {'us/record':>10s} {'vs ' + args.shapes[0]:>14s}")
    for shape, rs in results.items():
        m = statistics.median(r["cpu"] for r in rs)
        print(f"{shape:18s} {m:12.2f} {m / n * 1e6:10.0f} {base / m:13.1f}x")


if __name__ == "__main__":
    main()
