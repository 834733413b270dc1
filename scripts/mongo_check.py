#!/usr/bin/env python3
"""Check that a MongoDB wire-protocol server (mongod or SecantusDB) really works.

Connects with pymongo, runs `hello`/`ping`, inserts a document with a binary payload into a
scratch collection, reads it back, compares, and deletes it. Exit 0 on success.

    .local/venv/bin/python scripts/mongo_check.py [URL] [DATABASE]

URL defaults to $COHERENCY_MONGO_URL (else mongodb://127.0.0.1:27017), DATABASE to
$COHERENCY_MONGO_DATABASE (else coherency). Run by scripts/services after it settles Mongo.
"""

import os
import sys
import time
import uuid

try:
    import pymongo
    from bson.binary import Binary
except ImportError:  # pragma: no cover
    sys.exit("mongo_check: pymongo is not installed (scripts/services installs it into .local/venv)")


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("COHERENCY_MONGO_URL", "mongodb://127.0.0.1:27017")
    dbname = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("COHERENCY_MONGO_DATABASE", "coherency")
    started = time.monotonic()
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000)
    try:
        hello = client.admin.command("hello")
        client.admin.command("ping")
        try:
            version = client.admin.command("buildInfo").get("version", "?")
        except pymongo.errors.PyMongoError:
            version = "?"
        coll = client[dbname]["_service_check"]
        payload = os.urandom(64 * 1024)
        doc_id = str(uuid.uuid4())
        coll.insert_one({"_id": doc_id, "kind": "service-check", "payload": Binary(payload), "n": 42})
        got = coll.find_one({"_id": doc_id})
        if got is None:
            print(f"mongo_check: inserted {doc_id} but could not read it back", file=sys.stderr)
            return 1
        if bytes(got["payload"]) != payload or got["n"] != 42:
            print("mongo_check: document read back differs from the one written", file=sys.stderr)
            return 1
        deleted = coll.delete_one({"_id": doc_id}).deleted_count
        if deleted != 1:
            print("mongo_check: delete_one did not delete the scratch document", file=sys.stderr)
            return 1
    except pymongo.errors.PyMongoError as exc:
        print(f"mongo_check: {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    ms = (time.monotonic() - started) * 1000
    topo = f"replica set {hello['setName']!r}" if hello.get("setName") else "standalone"
    print(f"mongo_check: ok — {url} db={dbname} server {version} ({topo}); insert+read+delete of a 64 KiB doc in {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
