"""hnswlib and faiss on the vectors examples/bench.rs exported (BENCH_EXPORT), one thread, same
queries, same measures: build time, serialised bytes per vector, search p50/p99 and recall@10
against exact brute force per ef with every tenth id removed, and adding 10 x 1,000 vectors.
Run by index/bench.sh after the Rust benchmark.

    python bench_peers.py DIR DISTS SIZE...     (DISTS: comma-separated, as BENCH_DISTS)

Removal: hnswlib marks the ids deleted (as our tombstones); faiss HNSW cannot remove, so the
removed ids are left out of its build instead (the same truth either way).
"""
import os
import sys
import tempfile
import time

import faiss
import hnswlib
import numpy as np

K, ADDED = 10, 10_000
EFS = [16, 32, 64, 128, 256]
faiss.omp_set_num_threads(1)


def load(path, dim):
    x = np.fromfile(path, dtype="<f4").reshape(-1, dim)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def timed(queries, search):
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q[None, :]))
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    at = lambda p: times[round((len(times) - 1) * p)]
    return at(0.5), at(0.99), found


def recall(truth, found):
    return np.mean([len(set(t) & set(np.asarray(f).ravel())) / K for t, f in zip(truth, found)])


def report(name, build, nbytes, n, runs, add_s):
    print(f"\n#### {name}\n")
    print(f"build {build:.1f} s ({n / build:.0f} vectors/s); serialised {nbytes // n} bytes/vector; adding 1,000 to {n}: {add_s:.2f} s amortised\n")
    print("| search (k = 10, 10% removed) | p50 µs | p99 µs | recall@10 |\n|---|---|---|---|")
    for ef, (p50, p99, r) in runs.items():
        print(f"| ef = {ef} | {p50:.0f} | {p99:.0f} | {r:.4f} |")


def faiss_hnsw(name, index, base, keep, queries, truth, added, n):
    ids = np.arange(n)[keep]
    start = time.perf_counter()
    if not index.is_trained:
        index.train(base[keep])
    index.add(base[keep])
    build = time.perf_counter() - start
    runs = {}
    for ef in EFS:
        index.hnsw.efSearch = ef
        p50, p99, found = timed(queries, lambda q: ids[index.search(q, K)[1][0]])
        runs[ef] = (p50, p99, recall(truth, found))
    nbytes = faiss.serialize_index(index).nbytes
    start = time.perf_counter()
    for b in range(0, ADDED, 1000):
        index.add(added[b : b + 1000])
    add_s = (time.perf_counter() - start) / (ADDED / 1000)
    report(name, build, nbytes, n, runs, add_s)


def main(directory, dists, sizes):
    print(f"hnswlib {getattr(hnswlib, '__version__', '0.8')}, faiss {faiss.__version__}, 1 thread")
    for n in sizes:
        for dist in dists:
            dim = 64 if dist == "real" else 512
            base, added, queries = (load(f"{directory}/{dist}-{n}-{k}.f32", dim) for k in ("base", "added", "queries"))
            keep = np.arange(n) % 10 != 9
            scores = queries @ base.T
            scores[:, ~keep] = -np.inf
            truth = np.argsort(-scores, axis=1)[:, :K]
            del scores
            print(f"\n### {n} vectors, {dist}, {dim}-d (peers)")

            # hnswlib: M=16, efConstruction=200 (its README's values), inner product on unit vectors.
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=n + ADDED, M=16, ef_construction=200, random_seed=1)
            index.set_num_threads(1)
            start = time.perf_counter()
            index.add_items(base, np.arange(n))
            build = time.perf_counter() - start
            for i in np.arange(n)[~keep]:
                index.mark_deleted(int(i))
            runs = {}
            for ef in EFS:
                index.set_ef(ef)
                p50, p99, found = timed(queries, lambda q: index.knn_query(q, k=K)[0])
                runs[ef] = (p50, p99, recall(truth, found))
            with tempfile.TemporaryDirectory() as tmp:
                index.save_index(f"{tmp}/h.bin")
                nbytes = os.path.getsize(f"{tmp}/h.bin")
            start = time.perf_counter()
            for b in range(0, ADDED, 1000):
                index.add_items(added[b : b + 1000], np.arange(n + b, n + b + 1000))
            add_s = (time.perf_counter() - start) / (ADDED / 1000)
            report("hnswlib (M=16, efC=200)", build, nbytes, n, runs, add_s)
            del index

            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 100
            faiss_hnsw("faiss IndexHNSWFlat (M=32, efC=100)", index, base, keep, queries, truth, added, n)
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 100
            faiss_hnsw("faiss IndexHNSWSQ, 8-bit (M=32, efC=100)", index, base, keep, queries, truth, added, n)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), [int(s) for s in sys.argv[3:]])
