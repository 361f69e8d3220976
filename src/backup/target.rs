//! Where archives go: a folder, or an S3-compatible bucket (MinIO, Ceph, AWS) through
//! `object_store`, with multipart uploads for large archives; listing and retention for both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use super::BackupError;
use super::format;
use crate::config::BackupS3Config;

/// A backup target.
#[derive(Debug, Clone)]
pub enum Target {
    /// A local folder (another disk, an NFS mount…).
    Dir(PathBuf),
    /// An S3 bucket and key prefix.
    S3(S3Target),
}

/// An S3 bucket, prefix and the settings to reach it.
#[derive(Debug, Clone)]
pub struct S3Target {
    bucket: String,
    prefix: String,
    settings: BackupS3Config,
}

/// One archive at a target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveInfo {
    /// File name.
    pub name: String,
    /// Path or `s3://` URL.
    pub location: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// When it was taken (RFC 3339), from its name.
    pub created_at: String,
}

impl Target {
    /// Parses `PATH` or `s3://bucket/prefix`.
    pub fn parse(text: &str, s3: &BackupS3Config) -> Result<Target, BackupError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(BackupError::Refused(
                "no backup target: give --to PATH or s3://bucket/prefix, or set [backup] target in the configuration".into(),
            ));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Refused(format!(
                    "{text:?} names no bucket; write s3://bucket/prefix"
                )));
            }
            return Ok(Target::S3(S3Target {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                settings: s3.clone(),
            }));
        }
        if text.contains("://") {
            return Err(BackupError::Refused(format!(
                "{text:?}: only folders and s3:// targets are supported"
            )));
        }
        Ok(Target::Dir(PathBuf::from(text)))
    }

    /// The target as a person writes it.
    pub fn display(&self) -> String {
        match self {
            Target::Dir(d) => d.display().to_string(),
            Target::S3(s) => s.url(""),
        }
    }

    /// Moves a finished archive file into the target under `name`; returns its location.
    pub(crate) fn store(&self, file: &Path, name: &str) -> Result<String, BackupError> {
        match self {
            Target::Dir(dir) => {
                let dest = dir.join(name);
                std::fs::rename(file, &dest)
                    .map_err(|e| BackupError::io_at("cannot move the archive to", &dest, e))?;
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(dest.display().to_string())
            }
            Target::S3(s3) => {
                let result = block_on(s3.upload(file, name));
                let _ = std::fs::remove_file(file);
                result?;
                Ok(s3.url(name))
            }
        }
    }

    /// The archives at the target, newest first.
    pub fn list(&self) -> Result<Vec<ArchiveInfo>, BackupError> {
        let mut found: Vec<(String, String, u64)> = match self {
            Target::Dir(dir) => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(BackupError::io_at("cannot list", dir, e)),
                };
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        let meta = e.metadata().ok()?;
                        (meta.is_file() && format::is_archive_name(&name))
                            .then(|| (name, e.path().display().to_string(), meta.len()))
                    })
                    .collect()
            }
            Target::S3(s3) => block_on(s3.list())?,
        };
        found.retain(|(name, _, _)| format::name_timestamp(name).is_some());
        found.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(found
            .into_iter()
            .map(|(name, location, size_bytes)| ArchiveInfo {
                created_at: format::name_timestamp(&name)
                    .map(|s| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64),
                        )
                        .to_string()
                    })
                    .unwrap_or_default(),
                name,
                location,
                size_bytes,
            })
            .collect())
    }

    /// Removes archives beyond the newest `keep_last` and older than `keep_days` (0 = no
    /// such rule); the newest archive always stays. Returns the names removed.
    pub(crate) fn prune(
        &self,
        keep_last: u32,
        keep_days: u32,
        now: SystemTime,
    ) -> Result<Vec<String>, BackupError> {
        let archives = self.list()?;
        let now_s = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let doomed: Vec<&ArchiveInfo> = archives
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                if *i == 0 {
                    return false;
                }
                let too_many = keep_last > 0 && *i >= keep_last as usize;
                let too_old = keep_days > 0
                    && format::name_timestamp(&a.name)
                        .is_some_and(|t| now_s - t > i64::from(keep_days) * 86_400);
                too_many || too_old
            })
            .map(|(_, a)| a)
            .collect();
        let mut removed = Vec::new();
        for archive in doomed {
            match self {
                Target::Dir(dir) => {
                    let path = dir.join(&archive.name);
                    std::fs::remove_file(&path).map_err(|e| {
                        BackupError::io_at("cannot remove the old archive", &path, e)
                    })?;
                }
                Target::S3(s3) => block_on(s3.delete(&archive.name))?,
            }
            removed.push(archive.name.clone());
        }
        Ok(removed)
    }

    /// A local file holding the archive `name` (a path, or a download into `scratch`).
    pub fn fetch(&self, name: &str, scratch: &Path) -> Result<PathBuf, BackupError> {
        match self {
            Target::Dir(dir) => Ok(dir.join(name)),
            Target::S3(s3) => {
                let dest = scratch.join(name);
                block_on(s3.download(name, &dest))?;
                Ok(dest)
            }
        }
    }
}

/// Splits an `s3://bucket/prefix/name` URL into its target and archive name.
pub fn split_s3_url(url: &str, s3: &BackupS3Config) -> Result<(Target, String), BackupError> {
    let (dir, name) = url.rsplit_once('/').unwrap_or(("", url));
    if !format::is_archive_name(name) {
        return Err(BackupError::Refused(format!(
            "{url:?} does not end in an archive name (sparkbrain-….tar.zst[.age])"
        )));
    }
    Ok((Target::parse(dir, s3)?, name.to_string()))
}

impl S3Target {
    fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn url(&self, name: &str) -> String {
        let mut url = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            url.push('/');
            url.push_str(&self.prefix);
        }
        if !name.is_empty() {
            url.push('/');
            url.push_str(name);
        }
        url
    }

    fn failed(&self, e: impl std::fmt::Display) -> BackupError {
        BackupError::Target {
            target: self.url(""),
            detail: e.to_string(),
        }
    }

    /// The client: the standard AWS environment first, then what the configuration sets.
    fn client(&self) -> Result<Arc<dyn ObjectStore>, BackupError> {
        let s = &self.settings;
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_allow_http(s.allow_http);
        if !s.endpoint.is_empty() {
            // MinIO, Ceph and test servers serve buckets as paths, not host names.
            builder = builder
                .with_endpoint(&s.endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if !s.region.is_empty() {
            builder = builder.with_region(&s.region);
        }
        if !s.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&s.access_key_id);
        }
        if !s.secret_access_key_file.as_os_str().is_empty() {
            let secret = std::fs::read_to_string(&s.secret_access_key_file).map_err(|e| {
                self.failed(format!(
                    "cannot read the secret access key file {}: {e}",
                    s.secret_access_key_file.display()
                ))
            })?;
            builder = builder.with_secret_access_key(secret.trim());
        }
        Ok(Arc::new(builder.build().map_err(|e| self.failed(e))?))
    }

    async fn upload(&self, file: &Path, name: &str) -> Result<(), BackupError> {
        let store = self.client()?;
        let mut source = tokio::fs::File::open(file)
            .await
            .map_err(|e| BackupError::io_at("cannot read", file, e))?;
        // Small archives go in one PUT, larger ones as a multipart upload (S3 allows 10,000
        // parts: 160 GB at the default 16 MiB), aborted so no parts linger if anything fails.
        let part_bytes = self.settings.part_size_mib as usize * (1 << 20);
        let mut writer =
            object_store::buffered::BufWriter::with_capacity(store, self.key(name), part_bytes);
        let copied = tokio::io::copy(&mut source, &mut writer).await;
        match copied {
            Ok(_) => writer.shutdown().await.map_err(|e| self.failed(e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(self.failed(e))
            }
        }
    }

    async fn list(&self) -> Result<Vec<(String, String, u64)>, BackupError> {
        let store = self.client()?;
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?.to_string();
                format::is_archive_name(&name).then(|| (name.clone(), self.url(&name), o.size))
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<(), BackupError> {
        self.client()?
            .delete(&self.key(name))
            .await
            .map_err(|e| self.failed(e))
    }

    async fn download(&self, name: &str, dest: &Path) -> Result<(), BackupError> {
        let store = self.client()?;
        let got = store
            .get(&self.key(name))
            .await
            .map_err(|e| self.failed(e))?;
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(|e| BackupError::io_at("cannot write", dest, e))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(e))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| BackupError::io_at("cannot write", dest, e))?;
        }
        out.sync_all()
            .await
            .map_err(|e| BackupError::io_at("cannot write", dest, e))
    }
}

/// Runs an S3 call from blocking code: on the daemon's runtime when called from one of its
/// blocking threads, else on a runtime of its own (the CLI).
fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, BackupError>>,
) -> Result<T, BackupError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(f),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackupError::io("cannot start the S3 client", e))?
            .block_on(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"x").unwrap();
    }

    #[test]
    fn retention_keeps_the_newest_and_applies_both_rules() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=9 {
            touch(
                dir.path(),
                &format!("sparkbrain-2026110{day}T000000Z.tar.zst"),
            );
        }
        touch(dir.path(), "unrelated.txt");
        let target = Target::Dir(dir.path().to_path_buf());
        let now = humantime::parse_rfc3339("2026-11-10T00:00:00Z").unwrap();
        // Keep 5 by count, and nothing older than 3 days: days 7, 8, 9 stay.
        let removed = target.prune(5, 3, now).unwrap();
        assert_eq!(removed.len(), 6, "{removed:?}");
        let left: Vec<String> = target.list().unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(
            left,
            [
                "sparkbrain-20261109T000000Z.tar.zst",
                "sparkbrain-20261108T000000Z.tar.zst",
                "sparkbrain-20261107T000000Z.tar.zst"
            ]
        );
        assert!(dir.path().join("unrelated.txt").exists());
        // The newest stays even when every rule would remove it.
        let removed = target
            .prune(
                0,
                1,
                humantime::parse_rfc3339("2027-01-01T00:00:00Z").unwrap(),
            )
            .unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(target.list().unwrap().len(), 1);
    }

    #[test]
    fn targets_parse_with_clear_refusals() {
        let s3 = crate::config::load_with_env(
            &crate::config::FileChoice::None,
            &[],
            &crate::config::Overrides::default(),
        )
        .unwrap()
        .config
        .backup
        .s3;
        assert!(matches!(
            Target::parse("/srv/backups", &s3),
            Ok(Target::Dir(_))
        ));
        let t = Target::parse("s3://bucket/a/b/", &s3).unwrap();
        assert_eq!(t.display(), "s3://bucket/a/b");
        for bad in ["", "s3:///x", "ftp://host/x"] {
            assert!(Target::parse(bad, &s3).is_err(), "{bad}");
        }
    }
}
