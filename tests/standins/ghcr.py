#!/usr/bin/env python3
"""A stand-in for ghcr.io and api.github.com, for oranc's gc tests (no test can reach GitHub).

The registry side proxies a real CNCF distribution registry (`--upstream`), as ghcr.io speaks
distribution, except that it refuses the OCI manifest DELETE as ghcr.io does: 405 with
`{"errors":[{"code":"UNSUPPORTED"}]}` (containers/skopeo#1880).

The API side serves the "packages" endpoints as GitHub documents them
(https://docs.github.com/en/rest/packages/packages):
- `GET /user` (the token's login);
- `GET {/user | /orgs/ORG | /users/USER}/packages/container/PACKAGE/versions`, paged with
  `per_page` and `page` and a `Link` header (rel="next", rel="last"), as in
  https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api;
  each version is one manifest: `name` its digest, `metadata.container.tags` its tags;
  a package `a/b` of OWNER is the image `OWNER/a/b`, sent percent-encoded (`a%2Fb`);
- `DELETE .../versions/ID`: 204; deleting a version deletes all its tags. Refused as GitHub
  documents (https://docs.github.com/en/packages/learn-github-packages/deleting-and-restoring-a-package):
  a public version downloaded more than 5,000 times (`--popular DIGEST`), and the last tagged
  version of a package;
- auth: `Authorization: Bearer TOKEN` (or `token TOKEN`); listing needs `read:packages`,
  deleting `delete:packages` (https://docs.github.com/en/packages/learn-github-packages/about-permissions-for-github-packages);
  answers carry `X-OAuth-Scopes` and `X-Accepted-OAuth-Scopes` as GitHub's do for classic
  tokens;
- rate limits (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api):
  `X-RateLimit-Limit`, `-Remaining`, `-Used`, `-Reset` on every answer (`--primary-limit`
  requests an hour); a secondary limit on DELETEs (`--deletes-per-second`): past it 403 with
  `Retry-After` and GitHub's words.

With `--docker-hub` it stands in for Docker Hub's registry instead, as its API reference
documents the manifest DELETE (https://docs.docker.com/reference/api/registry/latest/):
by digest it answers 202, but 403 while a tag still points at the manifest; by tag, 405.

It prints `ready` once listening, and counts what it saw at `GET /_standin/stats`.
"""

import argparse
import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

LOCK = threading.Lock()
STATS = {"api_deletes": 0, "manifest_delete_attempts": 0, "api_requests": 0, "secondary_limited": 0}
# Digests of manifests PUT through the proxy, by repository: (digest, time).
PUSHED = {}
DELETED = set()
# Versions by repository, as last read from the registry: (when, versions).
CACHE = {}
DELETE_TIMES = []


def version_id(digest):
    return int(hashlib.sha256(digest.encode()).hexdigest()[:12], 16)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    args = None

    def log_message(self, *_):
        pass

    # --- plumbing -------------------------------------------------------------------
    def send(self, status, body=b"", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def upstream(self, method, path, body=None, headers=None):
        request = urllib.request.Request(
            self.args.upstream + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PATCH(self):
        self.route()

    def do_DELETE(self):
        self.route()

    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/v2"):
            return self.registry()
        if path == "/_standin/stats":
            with LOCK:
                return self.send(200, dict(STATS))
        return self.api()

    # --- ghcr.io --------------------------------------------------------------------
    def registry(self):
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        if self.command == "DELETE" and "manifests" in parts:
            with LOCK:
                STATS["manifest_delete_attempts"] += 1
            if self.args.docker_hub:
                return self.docker_hub_delete(parts)
            return self.send(
                405,
                {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]},
            )
        # The Host header goes on, so that the registry's upload URLs name the stand-in.
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in ("connection", "content-length")
        }
        body = self.body() if self.command in ("PUT", "POST", "PATCH") else None
        status, answer_headers, answer = self.upstream(self.command, self.path, body, headers)
        if self.command == "PUT" and "manifests" in parts and status == 201:
            repo = "/".join(parts[2 : parts.index("manifests")])
            digest = answer_headers.get("Docker-Content-Digest")
            with LOCK:
                PUSHED.setdefault(repo, []).append((digest, time.time()))
                CACHE.pop(repo, None)
        passed = {
            name: value
            for name, value in answer_headers.items()
            if name.lower() not in ("content-length", "transfer-encoding", "connection")
        }
        self.send(status, answer, passed)

    def docker_hub_delete(self, parts):
        repo = "/".join(parts[2 : parts.index("manifests")])
        reference = parts[-1]
        if not reference.startswith("sha256:"):
            return self.send(
                405, {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}
            )
        tagged = any(v["name"] == reference and v["metadata"]["container"]["tags"] for v in self.read_versions(repo))
        if tagged:
            return self.send(
                403,
                {"errors": [{"code": "DENIED", "message": "manifest is referenced by a tag"}]},
            )
        status, _, body = self.upstream("DELETE", self.path)
        return self.send(202 if status == 202 else status, body)

    # --- api.github.com -------------------------------------------------------------
    def rate_headers(self):
        with LOCK:
            STATS["api_requests"] += 1
            used = STATS["api_requests"]
        limit = self.args.primary_limit
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(limit - used, 0)),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-OAuth-Scopes": ", ".join(self.args.scopes),
        }

    def api(self):
        headers = self.rate_headers()
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        if token != self.args.token:
            return self.send(
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                headers,
            )
        path = urllib.parse.urlsplit(self.path)
        segments = [urllib.parse.unquote(s) for s in path.path.split("/")[1:]]
        if segments == ["user"]:
            return self.send(200, {"login": self.args.owner}, headers)
        # user/packages/container/P/versions[/ID], orgs/O/..., users/U/...
        if segments[:1] == ["user"]:
            owner, rest = self.args.owner, segments[1:]
        elif segments[:1] in (["orgs"], ["users"]) and len(segments) > 1:
            if (segments[0] == "orgs") != self.args.org or segments[1] != self.args.owner:
                return self.send(404, {"message": "Not Found"}, headers)
            owner, rest = segments[1], segments[2:]
        else:
            return self.send(404, {"message": "Not Found"}, headers)
        if rest[:2] != ["packages", "container"] or len(rest) < 4 or rest[3] != "versions":
            return self.send(404, {"message": "Not Found"}, headers)
        package = rest[2]
        repo = f"{owner}/{package}"
        needed = "delete:packages" if self.command == "DELETE" else "read:packages"
        headers["X-Accepted-OAuth-Scopes"] = needed
        if needed not in self.args.scopes:
            return self.send(
                403,
                {
                    "message": f"You need at least {needed} scope or admin rights on the package to do this.",
                    "documentation_url": "https://docs.github.com/rest/packages/packages",
                },
                headers,
            )
        versions = self.versions(repo)
        if self.command == "GET" and len(rest) == 4:
            query = urllib.parse.parse_qs(path.query)
            per_page = min(int(query.get("per_page", ["30"])[0]), self.args.max_per_page)
            page = int(query.get("page", ["1"])[0])
            last = max((len(versions) + per_page - 1) // per_page, 1)
            links = []
            base = f"http://{self.headers['Host']}{path.path}"
            if page < last:
                links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
                links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
            if links:
                headers["Link"] = ", ".join(links)
            return self.send(200, versions[(page - 1) * per_page : page * per_page], headers)
        if self.command == "DELETE" and len(rest) == 5:
            return self.delete(repo, int(rest[4]), versions, headers)
        return self.send(404, {"message": "Not Found"}, headers)

    def versions(self, repo):
        """The package's versions, read from the registry once and then kept up to date
        (pushes through the proxy and deletes drop the copy; it is read again after 30 s)."""
        with LOCK:
            cached = CACHE.get(repo)
            if cached and time.time() - cached[0] < 30:
                return [v for v in cached[1] if v["name"] not in DELETED]
        versions = self.read_versions(repo)
        with LOCK:
            CACHE[repo] = (time.time(), versions)
        return versions

    def read_versions(self, repo):
        status, _, body = self.upstream("GET", f"/v2/{repo}/tags/list?n=100000")
        tags = json.loads(body).get("tags") or [] if status == 200 else []
        by_digest = {}
        for tag in tags:
            status, headers, _ = self.upstream(
                "HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}
            )
            if status == 200:
                by_digest.setdefault(headers["Docker-Content-Digest"], []).append(tag)
        with LOCK:
            pushed = list(PUSHED.get(repo, []))
            deleted = set(DELETED)
        made = {}
        for digest, at in pushed:
            made.setdefault(digest, at)
        digests = list(by_digest) + [d for d in made if d not in by_digest and d not in deleted]
        out = []
        for digest in digests:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(made.get(digest, time.time())))
            out.append(
                {
                    "id": version_id(digest),
                    "name": digest,
                    "url": f"https://api.github.com/.../versions/{version_id(digest)}",
                    "created_at": at,
                    "updated_at": at,
                    "metadata": {
                        "package_type": "container",
                        "container": {"tags": sorted(by_digest.get(digest, []))},
                    },
                }
            )
        return out

    def delete(self, repo, wanted, versions, headers):
        now = time.time()
        with LOCK:
            DELETE_TIMES[:] = [t for t in DELETE_TIMES if now - t < 1.0]
            if len(DELETE_TIMES) >= self.args.deletes_per_second:
                STATS["secondary_limited"] += 1
                return self.send(
                    403,
                    {
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                        "documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    },
                    dict(headers, **{"Retry-After": "1"}),
                )
            DELETE_TIMES.append(now)
        version = next((v for v in versions if v["id"] == wanted), None)
        if version is None:
            return self.send(404, {"message": "Not Found"}, headers)
        digest = version["name"]
        if digest in self.args.popular:
            return self.send(
                400,
                {
                    "message": "Publicly visible package versions with more than 5000 downloads cannot be deleted. Contact GitHub support for further assistance."
                },
                headers,
            )
        tagged = [v for v in versions if v["metadata"]["container"]["tags"]]
        if version["metadata"]["container"]["tags"] and len(tagged) == 1:
            return self.send(
                400,
                {"message": "You cannot delete the last tagged version of a package. You must delete the package instead."},
                headers,
            )
        status, _, body = self.upstream("DELETE", f"/v2/{repo}/manifests/{digest}")
        if status not in (202, 404):
            return self.send(500, {"message": f"upstream said {status}: {body!r}"}, headers)
        with LOCK:
            DELETED.add(digest)
            STATS["api_deletes"] += 1
        return self.send(204, b"", headers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="the real registry, http://HOST:PORT")
    parser.add_argument("--owner", required=True)
    parser.add_argument("--org", action="store_true", help="the owner is an organisation")
    parser.add_argument("--token", required=True)
    parser.add_argument("--scopes", default="read:packages,delete:packages")
    parser.add_argument("--popular", action="append", default=[], help="a digest downloaded 5,000+ times")
    parser.add_argument("--primary-limit", type=int, default=5000)
    parser.add_argument("--deletes-per-second", type=int, default=1000)
    parser.add_argument("--docker-hub", action="store_true", help="stand in for Docker Hub's registry")
    parser.add_argument("--max-per-page", type=int, default=100, help="GitHub's is 100; fewer pages more")
    args = parser.parse_args()
    args.scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    Handler.args = args
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
