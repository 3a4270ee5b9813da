"""The build pipeline: plan -> train -> export -> bench -> report for each device profile.

build.py         build(): the stages in order, through the stage cache, failing closed
resolve.py       a build's input checks before any image is decoded (build() and --dry-run alike) and the
                 dry run's resolved build
failclosed.py    no PASS after any failure: failing reports, earlier models moved to stale/
inits.py         how a build's model starts (--init) and from what (bank, teacher, geometry)
compare_init.py  --compare-init: every usable initialization at the same training FLOPs
keys.py          each stage's cache key
manifest.py      manifest.json and reuse of finished stages
records.py       the typed records the stages hand each other
results.py       what a build answers: a DeviceResult per profile and the outcome (what it is asked:
                 wave_deploy.options.BuildOptions)
"""
