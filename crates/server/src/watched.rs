//! Files read again while serving: the token file ([`crate::auth`]) and TLS's certificate,
//! key and client CA ([`crate::tls`]). A set of files is looked at every [`EVERY`]; when what
//! they hold differs from the last read (or the last read gave an error), their contents are
//! handed to whoever installs them. Contents that cannot be read or used keep what was
//! installed last, and the error is said once per change (and kept for `status`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How often watched files are looked at.
pub const EVERY: Duration = Duration::from_secs(2);

/// One watched file: where it is, what it is in words (`the token file`), the variable that
/// names it (`TOKEN_FILE`) and the most bytes it may hold.
#[derive(Debug, Clone)]
pub struct File {
    pub path: PathBuf,
    pub what: &'static str,
    pub var: &'static str,
    pub max_bytes: u64,
}

/// A watched file that could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read {what} {path} ({var}): {cause}")]
pub struct ReadError {
    pub what: &'static str,
    pub path: String,
    pub var: &'static str,
    /// In plain words (`no such file`), without the OS error number.
    pub cause: String,
}

impl File {
    pub fn new(path: &Path, what: &'static str, var: &'static str, max_bytes: u64) -> File {
        File {
            path: path.to_owned(),
            what,
            var,
            max_bytes,
        }
    }

    /// The whole file (blocking: call it off the runtime's workers, or at start).
    pub fn read(&self) -> Result<Vec<u8>, ReadError> {
        use std::io::Read;
        let read = || -> std::io::Result<Vec<u8>> {
            let f = std::fs::File::open(&self.path)?;
            let mut bytes = Vec::new();
            f.take(self.max_bytes + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let error = |cause: String| ReadError {
            what: self.what,
            path: self.path.display().to_string(),
            var: self.var,
            cause,
        };
        let bytes = read().map_err(|e| {
            error(match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ if e.raw_os_error() == Some(21) => "it is a directory".to_owned(),
                _ => e.to_string(),
            })
        })?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(error(format!("larger than {} bytes", self.max_bytes)));
        }
        Ok(bytes)
    }
}

/// What [`Watched::reload`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what they held, and it is in use.
    Unchanged,
    /// New contents were installed; `again`: the same contents as before an error (a file
    /// readable again).
    Installed { again: bool },
    /// The files cannot be read or used: what was installed last stays. `news`: this error,
    /// or these contents, were not seen at the last look (say it once).
    Kept { error: String, news: bool },
}

/// A set of files read together, and what they held at the last look.
pub struct Watched {
    files: Vec<File>,
    seen: Mutex<Seen>,
}

struct Seen {
    contents: Option<Vec<Vec<u8>>>,
    error: Option<String>,
}

impl Watched {
    /// `files`, whose `contents` (in the same order) were installed at start.
    pub fn new(files: Vec<File>, contents: Vec<Vec<u8>>) -> Watched {
        Watched {
            files,
            seen: Mutex::new(Seen {
                contents: Some(contents),
                error: None,
            }),
        }
    }

    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// Why the files are not in use as they are now, if they are not.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every file (blocking); when the contents differ from the last look, or the last
    /// look gave an error, hands them to `install`, which puts them in use or says why not.
    pub fn reload<E: std::fmt::Display>(
        &self,
        install: impl FnOnce(&[Vec<u8>]) -> Result<(), E>,
    ) -> Reload {
        let read: Result<Vec<Vec<u8>>, ReadError> = self.files.iter().map(File::read).collect();
        let mut seen = self.lock();
        let (error, changed) = match read {
            Err(e) => (e.to_string(), false),
            Ok(contents) => {
                let same = seen.contents.as_ref() == Some(&contents);
                if same && seen.error.is_none() {
                    return Reload::Unchanged;
                }
                let result = install(&contents);
                seen.contents = Some(contents);
                match result {
                    Ok(()) => {
                        seen.error = None;
                        return Reload::Installed { again: same };
                    }
                    Err(e) => (e.to_string(), !same),
                }
            }
        };
        let news = changed || seen.error.as_deref() != Some(error.as_str());
        seen.error = Some(error.clone());
        Reload::Kept { error, news }
    }
}

/// Calls `look` every [`EVERY`] on the blocking pool (it reads files), for ever.
pub async fn every(look: impl Fn() + Clone + Send + 'static) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(look.clone()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_installed_and_bad_ones_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let file = File::new(&path, "the file", "FILE", 16);
        let w = Watched::new(vec![file.clone()], vec![file.read().unwrap()]);
        let ok = |c: &[Vec<u8>]| -> Result<(), String> {
            match c[0].starts_with(b"bad") {
                true => Err("it is bad".into()),
                false => Ok(()),
            }
        };
        assert_eq!(w.reload(ok), Reload::Unchanged);
        std::fs::write(&path, "two").unwrap();
        assert_eq!(w.reload(ok), Reload::Installed { again: false });
        std::fs::write(&path, "bad 1").unwrap();
        let news = |r: Reload| matches!(r, Reload::Kept { news: true, .. });
        assert!(news(w.reload(ok)));
        assert_eq!(
            w.reload(ok),
            Reload::Kept {
                error: "it is bad".into(),
                news: false
            }
        );
        // Other bad contents with the same error: a change, said again.
        std::fs::write(&path, "bad 2").unwrap();
        assert!(news(w.reload(ok)));
        assert_eq!(w.error().as_deref(), Some("it is bad"));
        std::fs::remove_file(&path).unwrap();
        let r = w.reload(ok);
        assert!(
            matches!(&r, Reload::Kept { error, news: true } if error.contains("(FILE): no such file")),
            "{r:?}"
        );
        std::fs::write(&path, "far too long for the limit").unwrap();
        let r = w.reload(ok);
        assert!(
            matches!(&r, Reload::Kept { error, .. } if error.contains("larger than 16 bytes")),
            "{r:?}"
        );
        std::fs::write(&path, "three").unwrap();
        assert_eq!(w.reload(ok), Reload::Installed { again: false });
        assert_eq!(w.error(), None);
    }
}
