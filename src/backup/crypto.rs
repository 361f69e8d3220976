//! Encryption of archives with age: a passphrase (scrypt) or age public keys (X25519).
//! No construction of our own: age's file format does the authenticated streaming.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::SecretString;

use super::BackupError;

/// The first bytes of every (binary) age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// How archives are encrypted, if at all.
#[derive(Debug, Clone, Default)]
pub enum Encryption {
    /// Not encrypted: secrets are left out.
    #[default]
    None,
    /// A passphrase read from this file (first line).
    Passphrase(PathBuf),
    /// These age public keys (`age1…`).
    Recipients(Vec<String>),
}

impl Encryption {
    /// Whether archives are encrypted.
    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Encryption::None)
    }

    /// Checks the settings before any work: the passphrase file readable and not empty, the
    /// public keys valid.
    pub fn check(&self) -> Result<(), BackupError> {
        match self {
            Encryption::None => Ok(()),
            Encryption::Passphrase(path) => read_passphrase(path).map(|_| ()),
            Encryption::Recipients(keys) => parse_recipients(keys).map(|_| ()),
        }
    }

    /// Wraps `out` so that what is written to it is encrypted; `finish` the result.
    pub fn wrap<W: Write>(&self, out: W) -> Result<EncryptingWriter<W>, BackupError> {
        let encryptor = match self {
            Encryption::None => return Ok(EncryptingWriter::Plain(out)),
            Encryption::Passphrase(path) => {
                age::Encryptor::with_user_passphrase(read_passphrase(path)?)
            }
            Encryption::Recipients(keys) => {
                let recipients = parse_recipients(keys)?;
                age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| BackupError::Encryption(e.to_string()))?
            }
        };
        let writer = encryptor
            .wrap_output(out)
            .map_err(|e| BackupError::Encryption(e.to_string()))?;
        Ok(EncryptingWriter::Age(Box::new(writer)))
    }
}

/// A writer that encrypts, or passes through.
pub enum EncryptingWriter<W: Write> {
    /// No encryption.
    Plain(W),
    /// age's streaming encryption.
    Age(Box<age::stream::StreamWriter<W>>),
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the last (authenticated) chunk and returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            EncryptingWriter::Plain(w) => Ok(w),
            EncryptingWriter::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            EncryptingWriter::Plain(w) => w.write(buf),
            EncryptingWriter::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            EncryptingWriter::Plain(w) => w.flush(),
            EncryptingWriter::Age(w) => w.flush(),
        }
    }
}

/// What decrypts an archive: a passphrase file or an age identity file.
#[derive(Debug, Clone, Default)]
pub enum Decryption {
    /// No key given: only plain archives open.
    #[default]
    None,
    /// The passphrase in this file.
    Passphrase(PathBuf),
    /// The age identities (`AGE-SECRET-KEY-…`) in this file.
    Identity(PathBuf),
}

/// Opens an archive's byte stream: decrypts it when it is an age file, with a precise error
/// when it is encrypted and no (or the wrong) key is given.
pub fn open_reader<R: Read + 'static>(
    mut input: R,
    key: &Decryption,
) -> Result<(Box<dyn Read>, bool), BackupError> {
    let mut head = vec![0u8; AGE_MAGIC.len()];
    let got = read_up_to(&mut input, &mut head)?;
    head.truncate(got);
    let rest = std::io::Cursor::new(head.clone()).chain(input);
    if head != AGE_MAGIC {
        return Ok((Box::new(rest), false));
    }
    let decryptor = age::Decryptor::new(rest).map_err(|e| {
        BackupError::Corrupt(format!("the archive's encryption header is damaged: {e}"))
    })?;
    let identities: Vec<Box<dyn age::Identity>> = match key {
        Decryption::None => {
            return Err(BackupError::KeyNeeded(if decryptor.is_scrypt() {
                "the archive is encrypted with a passphrase; give it with --passphrase-file FILE"
                    .into()
            } else {
                "the archive is encrypted to age public keys; give the matching identity with --identity FILE".into()
            }));
        }
        Decryption::Passphrase(path) => {
            if !decryptor.is_scrypt() {
                return Err(BackupError::KeyNeeded(
                    "the archive is encrypted to age public keys, not a passphrase; give the identity file with --identity FILE".into(),
                ));
            }
            let mut identity = age::scrypt::Identity::new(read_passphrase(path)?);
            // Archives may come from a faster machine than this one; allow their work factor.
            identity.set_max_work_factor(30);
            vec![Box::new(identity)]
        }
        Decryption::Identity(path) => {
            if decryptor.is_scrypt() {
                return Err(BackupError::KeyNeeded(
                    "the archive is encrypted with a passphrase, not to a public key; give it with --passphrase-file FILE".into(),
                ));
            }
            age::IdentityFile::from_file(path.to_string_lossy().into_owned())
                .and_then(|f| {
                    f.into_identities()
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .map_err(|e| {
                    BackupError::KeyNeeded(format!(
                        "cannot read the identity file {}: {e}",
                        path.display()
                    ))
                })?
        }
    };
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                BackupError::WrongKey(match key {
                    Decryption::Passphrase(_) => {
                        "the passphrase does not decrypt this archive".into()
                    }
                    _ => "no identity in the file decrypts this archive".into(),
                })
            }
            other => BackupError::Corrupt(format!("cannot decrypt the archive: {other}")),
        })?;
    Ok((Box::new(reader), true))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, BackupError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BackupError::io("cannot read the archive", e)),
        }
    }
    Ok(got)
}

/// Reads a passphrase: the file's first line, which must not be empty.
fn read_passphrase(path: &Path) -> Result<SecretString, BackupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BackupError::KeyNeeded(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(BackupError::KeyNeeded(format!(
            "the passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(line))
}

fn parse_recipients(keys: &[String]) -> Result<Vec<age::x25519::Recipient>, BackupError> {
    if keys.is_empty() {
        return Err(BackupError::KeyNeeded("no age public key given".into()));
    }
    keys.iter()
        .map(|k| {
            age::x25519::Recipient::from_str(k.trim()).map_err(|e| {
                BackupError::KeyNeeded(format!("{k:?} is not an age public key (age1…): {e}"))
            })
        })
        .collect()
}
