"""A driver written from the seed's README alone: it knows that
cluster_procs.json maps each node to {"pid": ..., "port": ...} and that the
nodes listen on localhost. (The seed names no request paths; /kv/<key> is
the store's HTTP API.) tests/seed_format.rs runs it with
`dynabed exec -- python3 seed_driver.py KEY VICTIM` and reads what it prints:

    node1 put 204
    node2 get 200 <value>
    killed node3
    node3 refused
    node1 get 200 <value>
"""

import http.client
import json
import os
import signal
import sys
import time


def request(port, method, key, body=None):
    conn = http.client.HTTPConnection("localhost", port, timeout=10)
    try:
        conn.request(method, "/kv/" + key, body=body)
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def refused(port):
    try:
        request(port, "GET", "probe")
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        # A connection the dying process had accepted is reset.
        return False


def main():
    key, victim = sys.argv[1], sys.argv[2]
    with open("cluster_procs.json") as f:
        procs = json.load(f)
    names = sorted(procs, key=lambda name: int(name[len("node"):]))
    value = "written through localhost"
    status, _ = request(procs[names[0]]["port"], "PUT", key, value.encode())
    print(names[0], "put", status, flush=True)
    for name in names[1:]:
        print(name, "get", *request(procs[name]["port"], "GET", key), flush=True)
    os.kill(procs[victim]["pid"], signal.SIGKILL)
    print("killed", victim, flush=True)
    deadline = time.time() + 10
    while not refused(procs[victim]["port"]) and time.time() < deadline:
        time.sleep(0.1)
    print(victim, "refused" if refused(procs[victim]["port"]) else "still answers", flush=True)
    survivor = next(name for name in names if name != victim)
    print(survivor, "get", *request(procs[survivor]["port"], "GET", key), flush=True)


main()
