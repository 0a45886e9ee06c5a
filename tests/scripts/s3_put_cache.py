"""Uploads a file:// binary cache (as `nix copy --to file://DIR` writes it) through oranc's
server with a real S3 client, the way the original oranc's README pushes with
`nix copy --to s3://BUCKET?endpoint=https://SERVER/REGISTRY/OWNER`: path-style requests,
AWS Signature V4, access key id = base64 of `user:password`.

usage: s3_put_cache.py ENDPOINT BUCKET USER PASSWORD DIR

Order as Nix uses it: nix-cache-info, every NAR, then every narinfo. Each object is read
back with head_object and get_object and compared. Prints `uploaded N` on success.
"""

import base64
import pathlib
import sys

import boto3
from botocore.config import Config

CONTENT_TYPES = {
    "nix-cache-info": "text/x-nix-cache-info",
    ".narinfo": "text/x-nix-narinfo",
    ".nar": "application/x-nix-nar",
}


def content_type(key: str) -> str:
    if key == "nix-cache-info":
        return CONTENT_TYPES[key]
    if key.endswith(".narinfo"):
        return CONTENT_TYPES[".narinfo"]
    return CONTENT_TYPES[".nar"]


def main() -> None:
    endpoint, bucket, user, password, directory = sys.argv[1:6]
    access_key_id = base64.b64encode(f"{user}:{password}".encode()).decode()
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key_id,
        aws_secret_access_key="_",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    root = pathlib.Path(directory)
    keys = ["nix-cache-info"]
    keys += sorted(str(p.relative_to(root)) for p in (root / "nar").iterdir())
    keys += sorted(p.name for p in root.glob("*.narinfo"))
    for key in keys:
        body = (root / key).read_bytes()
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type(key))
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == len(body), (key, head["ContentLength"], len(body))
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert got == body, f"{key} read back differently"
    print(f"uploaded {len(keys)}")


if __name__ == "__main__":
    main()
