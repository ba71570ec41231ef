"""``privproc image measure``: the simulated CVM's measurement of the predictor image."""

from __future__ import annotations

import argparse
import json
from typing import Any

from privproc.cli import options


def register(sub: Any) -> None:
    options.lazy_command(sub, "image", "the predictor image's measurement", image_parser, image_cmd)


def image_parser(prog: str) -> argparse.ArgumentParser:
    image = argparse.ArgumentParser(prog=prog, description=__doc__)
    image.add_argument("action", choices=["measure"])
    options.add_model(image)
    options.add_image_digest(image)
    options.add_json(image)
    return image


def image_cmd(args: argparse.Namespace) -> int:
    from privproc.predictor.loading import measure_predictor

    manifest = measure_predictor(options.model_spec(args), args.image_digest)
    result = {
        "measurement": manifest.measurement.hex(),
        "host_data": manifest.host_data.hex(),
        "image_digest": manifest.image_digest,
        "files_digest": manifest.files_digest,
        "model_digest": manifest.model_digest,
        "allowlist_digest": manifest.allowlist_digest,
        "files": len(manifest.files),
    }
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for name, value in result.items():
            print(f"{name:16s} {value}")
    return 0
