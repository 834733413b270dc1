//! The blob store (raw depth-frame chunks, meshes): `object_store` over a local folder by
//! default, S3 or Azure Blob by URL. Every blob's SHA-256 is computed on write and returned
//! so the caller can record it next to the key.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};

use super::Unreachable;

pub use crate::config::BlobLocation;

/// A handle on the blob store.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Set for local folders: writes are fsynced there.
    local_root: Option<PathBuf>,
    node: String,
}

/// What a write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

impl BlobStore {
    pub async fn open(url: &str, node: &str) -> Result<Self, Unreachable> {
        let unreachable = |reason: String| Unreachable { service: "blob", url: url.to_string(), reason };
        let location = BlobLocation::parse(url).map_err(&unreachable)?;
        let (store, prefix, local_root): (Arc<dyn ObjectStore>, String, Option<PathBuf>) = match location {
            BlobLocation::Local(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| unreachable(e.to_string()))?;
                let root = dir.canonicalize().map_err(|e| unreachable(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| unreachable(e.to_string()))?;
                (Arc::new(fs), String::new(), Some(root))
            }
            BlobLocation::S3 { bucket, prefix } => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| unreachable(e.to_string()))?;
                (Arc::new(s3), prefix, None)
            }
            BlobLocation::Azure { container, prefix } => {
                let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .build()
                    .map_err(|e| unreachable(e.to_string()))?;
                (Arc::new(az), prefix, None)
            }
        };
        let me = Self { store, prefix, local_root, node: node.to_string() };
        me.ping().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(me)
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{}", self.prefix, key))
        }
    }

    /// Writes `data` at `key`, durably (fsync on local folders; the services' own guarantee
    /// on S3/Azure), and returns its SHA-256.
    pub async fn put_durable(&self, key: &str, data: Bytes) -> Result<Stored, object_store::Error> {
        self.put_durable_hashed(key, data, None).await
    }

    /// [`Self::put_durable`] with the data's SHA-256 when the caller already has it (it is
    /// trusted: pass only a digest computed over exactly `data`).
    pub async fn put_durable_hashed(
        &self,
        key: &str,
        data: Bytes,
        sha256: Option<[u8; 32]>,
    ) -> Result<Stored, object_store::Error> {
        let sha256 = hex::encode(sha256.unwrap_or_else(|| Sha256::digest(&data).into()));
        let size = data.len() as u64;
        let path = self.path(key);
        self.store.put(&path, PutPayload::from(data)).await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            let res = tokio::task::spawn_blocking(move || sync_file_and_dir(&file)).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(object_store::Error::Generic { store: "local", source: Box::new(e) }),
                Err(e) => return Err(object_store::Error::Generic { store: "local", source: Box::new(e) }),
            }
        }
        Ok(Stored { key: key.to_string(), sha256, size })
    }

    /// Reads a whole blob.
    pub async fn get(&self, key: &str) -> Result<Bytes, object_store::Error> {
        self.store.get(&self.path(key)).await?.bytes().await
    }
    /// Deletes a blob (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes and reads back a small probe object.
    pub async fn ping(&self) -> Result<(), object_store::Error> {
        let key = format!("_health/{}", self.node);
        let path = self.path(&key);
        self.store.put(&path, PutPayload::from_static(b"ok")).await?;
        self.store.head(&path).await.map(|_| ())
    }
}

fn sync_file_and_dir(file: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_parse() {
        assert_eq!(BlobLocation::parse("file://.local/blobs").unwrap(), BlobLocation::Local(".local/blobs".into()));
        assert_eq!(BlobLocation::parse("file:///var/lib/x").unwrap(), BlobLocation::Local("/var/lib/x".into()));
        assert_eq!(
            BlobLocation::parse("s3://bucket/a/b").unwrap(),
            BlobLocation::S3 { bucket: "bucket".into(), prefix: "a/b".into() }
        );
        assert!(BlobLocation::parse("ftp://x").is_err());
        assert!(BlobLocation::parse("s3://").is_err());
    }
}
