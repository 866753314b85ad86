"""`kvctl bench`: the same load against kvstore and etcd, side by side.

* `keys`      — key names and the uniform / scrambled-zipfian key choosers;
* `workloads` — put, get and the YCSB-style mixes (A, B, C, F);
* `drivers`   — one async driver per target: the kvstore client, or etcd's v3 gRPC API;
* `clusters`  — local 3-member kvstore and etcd clusters in a temp dir, killed on any exit;
* `loadgen`   — client processes driving a driver, merged HdrHistograms;
* `scenarios` — failover (kill -9 the leader under writes), memory (RSS after N keys) and soak
  (RSS and open files of every member sampled under sustained writes);
* `report`    — records, JSON, rich tables, PNG plots;
* `runner`    — what `kvctl bench` runs, in order.

The CLI imports this package; `benchmarks/` holds the micro-benchmarks and RESULTS.md.
"""
