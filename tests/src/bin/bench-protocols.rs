//! `cargo run --release -p oranc-tests --bin bench-protocols [SECONDS]`: a warm narinfo
//! (served from the response cache) through `oranc server` in each protocol it speaks, in
//! one run with one load generator (`h2load`, from nghttp2-client): plain HTTP/1.1, h2c, and
//! over TLS HTTP/1.1 and HTTP/2, with 16 connections and with one connection carrying 16
//! streams (how Lix multiplexes). Beside them, the anchor a deployment without native TLS
//! has: nginx terminating TLS and HTTP/2 in front of the plain server (keeping its
//! connections to it, and its clients' for ever: h2load does not reconnect). Prints figures;
//! asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::process::Command;

use oranc_tests::abuse::{hot_url, target_server};
use oranc_tests::nginx::NginxProcess;
use oranc_tests::tls::TestCertificate;
use oranc_tests::{bench_arg, bench_oranc, clean_command, run_ok};

/// `h2load` against `url` for `seconds` with `args`: "N req/s, mean M ms, F failed".
fn h2load(url: &str, seconds: usize, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("h2load")
            .args(["-D", &seconds.to_string(), "--warm-up-time", "1"])
            .args(args)
            .arg(url),
    );
    let field = |prefix: &str| {
        out.lines()
            .find(|line| line.trim_start().starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    let rate = field("finished in")
        .split(", ")
        .nth(1)
        .unwrap_or("? req/s")
        .to_owned();
    let requests = field("requests:");
    let failed = requests
        .split(", ")
        .find(|part| part.ends_with("failed"))
        .unwrap_or("? failed")
        .to_owned();
    let mean = field("time for request:")
        .split_whitespace()
        .nth(5)
        .unwrap_or("?")
        .to_owned();
    format!("{rate:>16}, mean {mean:>8}, {failed}")
}

fn main() {
    let seconds = bench_arg(1, 5);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certificate = TestCertificate::make(dir.path(), "bench");
    // At the default log level: the tests' trace level makes h2's own per-frame events cost
    // more than the requests.
    let oranc = || {
        let mut command = clean_command(bench_oranc());
        command.env("ORANC_LOG", "info");
        command
    };
    let (_registry, plain, _plain_dir) = target_server(oranc(), "");
    let (_registry_tls, tls, _tls_dir) = target_server(oranc(), &certificate.config());
    let plain_url = hot_url(&plain);
    let tls_url = hot_url(&tls).replacen("http://", "https://", 1);
    let nginx = NginxProcess::start(&format!(
        "upstream oranc {{ server {}; keepalive 32; }}\n  server {{\n    listen {{listen}} ssl http2;\n    keepalive_requests 1000000000;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{ proxy_pass http://oranc; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $http_host; }}\n  }}\n",
        plain.addr,
        certificate.cert.display(),
        certificate.key.display(),
    ));
    let nginx_url = format!(
        "https://{}/{}",
        nginx.addr,
        plain_url.splitn(4, '/').nth(3).unwrap_or_default()
    );
    // Warm the response caches.
    for url in [&plain_url, &tls_url, &nginx_url] {
        run_ok(Command::new("curl").args(["-skf", "-o", "/dev/null", url]));
    }
    println!("bench-protocols: warm narinfo, h2load -D {seconds} on loopback (2 shared cores)");
    for (label, url, args) in [
        (
            "HTTP/1.1, 16 connections",
            &plain_url,
            &["--h1", "-c16"][..],
        ),
        ("h2c, 16 connections", &plain_url, &["-c16"][..]),
        (
            "h2c, 1 connection x 16 streams",
            &plain_url,
            &["-c1", "-m16"][..],
        ),
        ("HTTPS/1.1, 16 connections", &tls_url, &["--h1", "-c16"][..]),
        ("h2 over TLS, 16 connections", &tls_url, &["-c16"][..]),
        (
            "h2 over TLS, 1 connection x 16 streams",
            &tls_url,
            &["-c1", "-m16"][..],
        ),
        (
            "anchor: nginx h2+TLS -> oranc HTTP/1.1, 16 conn.",
            &nginx_url,
            &["-c16"][..],
        ),
        (
            "anchor: nginx h2+TLS -> oranc, 1 conn. x 16",
            &nginx_url,
            &["-c1", "-m16"][..],
        ),
    ] {
        println!("{label:<50} {}", h2load(url, seconds, args));
    }
}
