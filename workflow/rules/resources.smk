# What every job asks the scheduler for (threads, mem_mb, runtime in minutes, gpu), derived from the
# configuration by workflow/job_resources.py, then scaled and capped by the site's one file,
# workflow/site_resources.yaml (or --config site_resources=PATH). Rules use
#   threads: job_threads("train")
#   resources: **job_resources("train")
import job_resources as _job_resources  # workflow/job_resources.py (common.smk put workflow/ on the path)

try:
    SITE_RESOURCES = _job_resources.read_site(config.get("site_resources"))
    for _launched in _job_resources.LAUNCHED:  # refused at load, not as each job is planned
        _job_resources.resources_for(_launched, config, DEVICE, LOCAL_RUN, SITE_RESOURCES)
    _job_resources.check_gpu_memory(config, DEVICE, SITE_RESOURCES)
except ValueError as error:
    raise WorkflowError(str(error)) from None


def _job(rule, wildcards):
    job = {key: int(getattr(wildcards, key)) for key in ("world_size", "train_len") if hasattr(wildcards, key)}
    return _job_resources.resources_for(rule, config, DEVICE, LOCAL_RUN, SITE_RESOURCES, **job)


def job_threads(rule):
    return lambda wildcards: _job(rule, wildcards)["threads"]


def job_resources(rule):
    return {key: (lambda wildcards, key=key: _job(rule, wildcards)[key]) for key in ("mem_mb", "runtime", "gpu")}
