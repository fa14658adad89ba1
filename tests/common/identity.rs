//! What the sign-in tests need, all on this machine: a certificate of the
//! test's own (rcgen: a self-signed leaf for 127.0.0.1, not a CA), Azurite
//! over HTTPS accepting bearer tokens (`--oauth basic`), tokens in the shape
//! Azurite checks (a JWT with no signature), a loopback server standing for
//! a managed identity endpoint or Entra ID, and a stub `az`.
//!
//! Included by the sign-in test binaries with `#[path]`, so that other
//! binaries build and start none of it.
#![allow(dead_code)] // each binary uses a part of it

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use durable_status::emulator::{Azurite, AzuriteOptions};

/// The tenant of the test's tokens.
pub const TENANT: &str = "72f988bf-0000-4000-8000-2d7cd011db47";
/// The audience Azure Storage tokens carry.
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com";

/// The test's certificate and key, PEM files in a folder of their own.
pub struct Tls {
    pub dir: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The certificate of this test binary, made once.
pub fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        // Under the build's own scratch folder (cargo clean takes it), one
        // folder per run; those of runs that have ended go.
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sign-in");
        remove_ended_runs(&parent);
        let dir = parent.join(format!("{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("a folder for the certificate");
        // A leaf, not a CA: webpki refuses a CA certificate as a server's.
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
        let certificate = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&certificate, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        Tls {
            dir,
            certificate,
            key,
        }
    })
}

/// Removes the folders of runs whose process is gone (where /proc tells).
fn remove_ended_runs(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Azurite over HTTPS with the test's certificate, accepting bearer tokens:
/// one per test binary.
pub fn secure_azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Result<Azurite, String>> = OnceLock::new();
    let tls = tls();
    match AZURITE.get_or_init(|| {
        Azurite::start_with(
            AzuriteOptions::default()
                .https(&tls.certificate, &tls.key)
                .oauth(true),
        )
        .map_err(|e| e.to_string())
    }) {
        Ok(azurite) => azurite,
        Err(why) => panic!("Azurite over HTTPS could not start: {why}"),
    }
}

/// Azurite over plain HTTP that accepts bearer tokens, as far as it can:
/// it refuses every one of them, saying HTTP is not allowed.
pub fn plain_oauth_azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Result<Azurite, String>> = OnceLock::new();
    match AZURITE.get_or_init(|| {
        Azurite::start_with(AzuriteOptions::default().oauth(true)).map_err(|e| e.to_string())
    }) {
        Ok(azurite) => azurite,
        Err(why) => panic!("Azurite with --oauth could not start: {why}"),
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token as Entra ID issues it for storage, in the shape Azurite checks
/// (no signature): valid from a minute ago for `lifetime` seconds from now
/// (negative: expired), for `audience`.
pub fn jwt(audience: &str, lifetime: i64) -> String {
    let now = now();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": now - 3600,
        "nbf": now - 3600,
        "exp": now + lifetime,
        "oid": "00000000-0000-0000-0000-0000000000aa",
        "tid": TENANT,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.")
}

/// A token for storage that lives an hour.
pub fn storage_token() -> String {
    jwt(STORAGE_AUDIENCE, 3600)
}

/// A managed identity endpoint's answer: `expires_on` as App Service sends
/// it (a string of Unix seconds), `seconds` from now.
pub fn managed_identity_answer(token: &str, seconds: i64) -> String {
    serde_json::json!({
        "access_token": token,
        "expires_on": (now() + seconds).to_string(),
        "resource": STORAGE_AUDIENCE,
        "token_type": "Bearer",
        "client_id": "00000000-0000-0000-0000-0000000000bb",
    })
    .to_string()
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query's parameters, decoded.
    pub fn query(&self) -> HashMap<String, String> {
        form(self.target.split_once('?').map_or("", |(_, q)| q))
    }

    /// The form body's fields, decoded.
    pub fn form(&self) -> HashMap<String, String> {
        form(&self.body)
    }
}

fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decoded(k), decoded(v))
        })
        .collect()
}

fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Answer = dyn Fn(&Recorded) -> (u16, String) + Send + Sync;

/// A loopback HTTP server that records its requests and answers each with
/// `answer`: a managed identity endpoint, or Entra ID's token endpoint.
pub struct TokenServer {
    port: u16,
    scheme: &'static str,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    pub fn start(answer: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static) -> Self {
        Self::start_with(None, answer)
    }

    /// [`TokenServer::start`] over HTTPS, with the test's certificate.
    pub fn start_tls(answer: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static) -> Self {
        Self::start_with(Some(server_tls()), answer)
    }

    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        answer: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let (recorded, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (recorded, answer) = (Arc::clone(&recorded), Arc::clone(&answer));
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => serve(stream, &recorded, answer.as_ref()),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            serve(
                                rustls::StreamOwned::new(connection, stream),
                                &recorded,
                                answer.as_ref(),
                            )
                        }
                    }
                });
            }
        });
        TokenServer {
            port,
            scheme,
            requests,
            stop,
        }
    }

    /// A server that hands out `token` as a managed identity endpoint,
    /// valid for an hour.
    pub fn managed_identity(token: String) -> Self {
        Self::start(move |_| (200, managed_identity_answer(&token, 3600)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The test's certificate, for a server.
fn server_tls() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = tls();
    let certificates = CertificateDer::pem_file_iter(&tls.certificate)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&tls.key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap(),
    )
}

/// Reads one request from `stream`, records it, and answers it.
fn serve<S: Read + Write>(mut stream: S, recorded: &Mutex<Vec<Recorded>>, answer: &Answer) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if stream.read_exact(&mut body).is_err() {
        return;
    }
    let request = Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    recorded.lock().unwrap().push(request.clone());
    let (status, body) = answer(&request);
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// Writes a stub `az` into `dir` that prints what `az account
/// get-access-token --output json` prints (Azure CLI 2.54 and later), with
/// `token`, and records its arguments in `dir/az-arguments`.
pub fn stub_az(dir: &Path, token: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let expires_on = now() + 3600;
    let answer = serde_json::json!({
        "accessToken": token,
        "expiresOn": "2099-01-01 00:00:00.000000",
        "expires_on": expires_on,
        "subscription": "00000000-0000-0000-0000-0000000000cc",
        "tenant": TENANT,
        "tokenType": "Bearer",
    });
    let arguments = dir.join("az-arguments");
    let script = format!(
        // Shell built-ins only: PATH may hold nothing but this folder.
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nprintf '%s\\n' '{answer}'\n",
        arguments.display()
    );
    let az = dir.join("az");
    std::fs::write(&az, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    az
}

/// The argument lines the stub `az` in `dir` was run with.
pub fn az_arguments(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("az-arguments"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A folder of the test's own.
pub fn scratch(name: &str) -> PathBuf {
    let dir = tls().dir.join(format!("{name}-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
