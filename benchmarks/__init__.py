"""asv benchmark suite of slidebench (see asv.conf.json and docs/figures.md).

bench_engine.py holds the asv benchmarks (time_/peakmem_/track_). engine_shape.py and tf_shape.py are
stand-alone speed scripts of the engine and baseline parts; they define no asv benchmark names.
"""
