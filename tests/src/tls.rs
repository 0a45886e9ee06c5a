//! Test certificates (for 127.0.0.1 and localhost, issued by a test CA, made by `openssl`
//! as an operator would make one), and curl over TLS or HTTP/2: which protocol it agreed on.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A server certificate and its key, in PEM files, issued by a certificate authority of its
/// own (`ca`, what clients trust): TLS libraries refuse a CA certificate as a server's.
#[derive(Debug, Clone)]
pub struct TestCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TestCertificate {
    /// Makes `NAME.pem`, `NAME.key` and `NAME-ca.pem` in `dir`: P-256 keys, valid for a
    /// day, the server's for 127.0.0.1 and localhost.
    pub fn make(dir: &Path, name: &str) -> Self {
        let file = |suffix: &str| dir.join(format!("{name}{suffix}"));
        let (cert, key, ca, ca_key, request, extensions) = (
            file(".pem"),
            file(".key"),
            file("-ca.pem"),
            file("-ca.key"),
            file(".csr"),
            file(".ext"),
        );
        let new_key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        crate::run_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "1"])
                .args(new_key)
                .args(["-subj", &format!("/CN={name} CA")])
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca),
        );
        crate::run_ok(
            Command::new("openssl")
                .arg("req")
                .args(new_key)
                .args(["-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&request),
        );
        std::fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing the extensions");
        crate::run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
                .arg("-in")
                .arg(&request)
                .arg("-CA")
                .arg(&ca)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&extensions)
                .arg("-out")
                .arg(&cert),
        );
        Self { cert, key, ca }
    }

    /// The `[tls]` table naming these files (put it last in a config).
    pub fn config(&self) -> String {
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// Puts `other`'s files in place of these (as a renewal does).
    pub fn replace_with(&self, other: &Self) {
        std::fs::copy(&other.cert, &self.cert).expect("copying the certificate");
        std::fs::copy(&other.key, &self.key).expect("copying the key");
    }
}

/// `curl` of `url` with `args`: the HTTP version it spoke (`1.1`, `2`) and the status.
pub fn curl_version(url: &str, args: &[&str]) -> (String, String) {
    let out = crate::run_ok(
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .args(args)
            .arg(url),
    );
    let (version, status) = out.split_once(' ').unwrap_or((&out, ""));
    (version.to_owned(), status.to_owned())
}
