//! Where backups go: a directory or S3-compatible object storage, through one API
//! (`object_store`). A backup is a folder of objects under the target: its compressed
//! files, then its `manifest.json`, written last, so that a folder without one is a
//! backup that did not finish.

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BackupError;

/// The name of a backup's manifest within its folder.
pub const MANIFEST: &str = "manifest.json";

/// Bytes read from a local file per part of an upload.
const PART: usize = 8 << 20;

/// A place that holds backups.
#[derive(Clone)]
pub struct Target {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    /// How it was given (a directory or an `s3://` URL): no credentials.
    display: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl Target {
    /// A directory (created if missing), or `s3://<bucket>[/<prefix>]`, whose credentials,
    /// region and endpoint come from the standard `AWS_*` variables (an `http://`
    /// endpoint, e.g. a local server, is allowed as given).
    pub fn open(spec: &str) -> Result<Target, BackupError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Target(
                    "an s3:// target must name its bucket".into(),
                ));
            }
            let mut builder =
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok();
            if endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
            {
                builder = builder.with_allow_http(true);
            }
            let objects = builder
                .build()
                .map_err(|e| BackupError::Target(format!("{spec}: {e}")))?;
            Ok(Target {
                objects: Arc::new(objects),
                prefix: Path::from(prefix.trim_matches('/')),
                display: spec.trim_end_matches('/').to_owned(),
            })
        } else if spec.contains("://") {
            Err(BackupError::Target(
                "a target is a directory or an s3://<bucket>[/<prefix>] URL".into(),
            ))
        } else {
            std::fs::create_dir_all(spec)
                .map_err(|e| BackupError::Target(format!("{spec}: {e}")))?;
            // Folders emptied by a deletion are removed too.
            let objects = object_store::local::LocalFileSystem::new_with_prefix(spec)
                .map_err(|e| BackupError::Target(format!("{spec}: {e}")))?
                .with_automatic_cleanup(true);
            Ok(Target {
                objects: Arc::new(objects),
                prefix: Path::default(),
                display: spec.trim_end_matches('/').to_owned(),
            })
        }
    }

    /// Where a backup of this target is, as a user names it.
    pub fn location(&self, backup: &str) -> String {
        format!("{}/{backup}", self.display)
    }

    fn path(&self, backup: &str, file: &str) -> Path {
        self.prefix.child(backup).child(file)
    }

    /// Uploads the local file `from` as `file` of `backup`; its size and SHA-256.
    pub async fn upload(
        &self,
        backup: &str,
        file: &str,
        from: &FsPath,
    ) -> Result<(u64, String), BackupError> {
        let upload = self
            .objects
            .put_multipart(&self.path(backup, file))
            .await
            .map_err(|e| self.failed("upload to", e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut local = tokio::fs::File::open(from).await?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut buffer = vec![0; PART];
        loop {
            let read = local.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            bytes += read as u64;
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|e| self.failed("upload to", e))?;
            writer.write(&buffer[..read]);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.failed("upload to", e))?;
        Ok((bytes, tm_store::hex(&hasher.finalize())))
    }

    /// Writes `bytes` as `file` of `backup`.
    pub async fn put(&self, backup: &str, file: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.objects
            .put(&self.path(backup, file), bytes.into())
            .await
            .map_err(|e| self.failed("write to", e))?;
        Ok(())
    }

    /// Reads `file` of `backup` whole (a manifest); `None` if it is not there.
    pub async fn read(&self, backup: &str, file: &str) -> Result<Option<Vec<u8>>, BackupError> {
        match self.objects.get(&self.path(backup, file)).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| self.failed("read from", e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("read from", e)),
        }
    }

    /// Downloads `file` of `backup` into the local file `to`; its size and SHA-256.
    pub async fn download(
        &self,
        backup: &str,
        file: &str,
        to: &FsPath,
    ) -> Result<(u64, String), BackupError> {
        let got = self
            .objects
            .get(&self.path(backup, file))
            .await
            .map_err(|e| self.failed("read from", e))?;
        let mut stream = got.into_stream();
        let mut local =
            tokio::io::BufWriter::with_capacity(PART, tokio::fs::File::create(to).await?);
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| self.failed("read from", e))?
        {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            local.write_all(&chunk).await?;
        }
        local.flush().await?;
        Ok((bytes, tm_store::hex(&hasher.finalize())))
    }

    /// The folders directly under the target: every backup, finished or not.
    pub async fn backups(&self) -> Result<Vec<String>, BackupError> {
        let listed = self
            .objects
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.failed("list", e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| name.starts_with(crate::NAME_PREFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes every object of `backup`, its manifest first (so that a deletion cut
    /// short leaves an unfinished backup, never a manifest without its files).
    pub async fn delete(&self, backup: &str) -> Result<(), BackupError> {
        let manifest = self.path(backup, MANIFEST);
        match self.objects.delete(&manifest).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.failed("delete from", e)),
        }
        let folder = self.prefix.child(backup);
        let objects: Vec<_> = self
            .objects
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| self.failed("list", e))?;
        for object in objects {
            match self.objects.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("delete from", e)),
            }
        }
        Ok(())
    }

    fn failed(&self, doing: &str, err: object_store::Error) -> BackupError {
        BackupError::Target(format!("could not {doing} {}: {err}", self.display))
    }
}
