"""Scheduler cost per task: 2000 no-op tasks on a 2-worker (1 thread each) LocalCluster on 127.0.0.1."""
import logging, time

def noop(i):
    return i

def main():
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    client.submit(noop, -1).result()
    for n in (200, 2000):
        t = time.perf_counter()
        futures = [client.submit(noop, i, pure=False) for i in range(n)]
        for f in distributed.as_completed(futures):
            f.result()
        dt = time.perf_counter() - t
        print(f"{n} no-op tasks: {dt:.2f} s, {1e3*dt/n:.2f} ms per task (submit + schedule + run + result, one client)")
    client.close(); cluster.close()

if __name__ == "__main__":
    main()
