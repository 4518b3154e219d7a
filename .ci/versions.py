"""Print the versions one CI leg installed, so a log says what it proved.

Reads installed distributions' metadata only: importing torch here would add
seconds to every CI run and could fail for reasons the tests should report.
"""
import platform
import sys
from importlib import metadata

DISTRIBUTIONS = (
    "torch", "torchvision", "onnx", "onnxruntime-gpu", "onnxruntime", "onnxscript",
    "onnxsim", "onnxconverter-common", "numpy", "click", "timm", "lightning", "pytest",
)


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main() -> None:
    leg = sys.argv[1] if len(sys.argv) > 1 else "this environment"
    found = {name: installed(name) for name in DISTRIBUTIONS}
    listed = ", ".join(f"{name} {version}" for name, version in found.items() if version)
    print(f"[{leg}] python {platform.python_version()} ({platform.machine()}): {listed}", flush=True)


if __name__ == "__main__":
    main()
