# Other projects' dilated attention measured by the suite's correctness cases (benchmarks/peers.py):
# a rule only where one of them is installed (pip install --no-deps dilated-attention-pytorch
# longnet einops; torchscale from its repository), and a target of its own, not part of `all`, so
# the default run's outputs never depend on what else happens to be installed:
#   snakemake --cores 2 peers
import importlib.util

if any(importlib.util.find_spec(name) for name in ("dilated_attention_pytorch", "long_net", "torchscale")):

    localrules: peers

    rule peers:
        output:
            f"{TABLE_DIR}/peers.csv",
        params:
            python=PYTHON,
            script=f"{workflow.basedir}/benchmarks/peers.py",
        log:
            f"{LOGS}/peers.log",
        conda:
            ENV
        shell:
            "{params.python:q} {params.script:q} --out {output:q} > {log:q} 2>&1"
