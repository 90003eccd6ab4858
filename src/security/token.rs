//! Shared-secret tokens: reading a token file as strictly as SSH reads a key, writing new
//! ones without ever replacing a file, and comparing a presented token in constant time.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::SecurityError;

/// Shortest token accepted: a guessable secret would make the gate decorative.
const MIN_LEN: usize = 16;
/// Random bytes in a generated token (hex-encoded: 64 characters).
const GENERATED_BYTES: usize = 32;

/// A secret read from a token file.
#[derive(Clone)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The secret as sent in `authorization: Bearer …`.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }

    /// Checks a token's text: what the file holds, trimmed.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self, SecurityError> {
        let secret = text.trim();
        let bad = |why: &str| SecurityError::BadToken {
            path: path.to_path_buf(),
            why: why.to_owned(),
        };
        if secret.len() < MIN_LEN {
            return Err(bad(&format!(
                "the token is shorter than {MIN_LEN} characters; generate one with \
                 `sqd --mode leader init --generate-tokens`"
            )));
        }
        // It travels as an HTTP header value.
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "the token must be printable ASCII without spaces (one line)",
            ));
        }
        Ok(Token(secret.to_owned()))
    }

    /// Reads `path`, refusing a file that group or others may read, as ssh does for keys.
    pub(crate) fn read(path: &Path) -> Result<Self, SecurityError> {
        let io = |source| SecurityError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecurityError::BadToken {
                path: path.to_path_buf(),
                why: format!(
                    "readable by group or others (mode {mode:04o}); run: chmod 600 {}",
                    path.display()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(path, &text)
    }
}

/// The token a server expects, kept as a hash so that comparing takes the same time
/// whatever the presented token is (`blake3::Hash` compares in constant time, and hashing
/// first hides the length too).
#[derive(Clone)]
pub(crate) struct Expected(blake3::Hash);

impl Expected {
    pub(crate) fn new(token: &Token) -> Self {
        Expected(blake3::hash(token.secret().as_bytes()))
    }

    pub(crate) fn matches(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.0
    }
}

/// Writes a new random token into `path` with mode 0600; an existing file is never replaced.
pub(crate) fn write_new(path: &Path) -> Result<(), SecurityError> {
    let secret = random_hex(GENERATED_BYTES).map_err(|source| SecurityError::Read {
        path: PathBuf::from("/dev/urandom"),
        source,
    })?;
    let io = |source| SecurityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SecurityError::Exists(path.to_path_buf()),
            _ => io(source),
        })?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token of an `authorization` header value: `Bearer <token>` (scheme case-insensitive).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
