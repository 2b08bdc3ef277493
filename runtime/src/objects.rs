//! Object storage: one store per bucket (scenes, datasets, checkpoints), in
//! local folders by default or on an S3-protocol service.

use crate::config::{NodeConfig, StorageBackend};
use anyhow::Context;
use object_store::ObjectStore;
use std::sync::Arc;

/// The node's buckets.
#[derive(Clone)]
pub struct Buckets {
    pub scenes: Arc<dyn ObjectStore>,
    pub datasets: Arc<dyn ObjectStore>,
    pub checkpoints: Arc<dyn ObjectStore>,
    /// Signs URLs into the scenes bucket, for stores that can (S3).
    pub scenes_signer: Option<Arc<dyn object_store::signer::Signer>>,
}

impl Buckets {
    pub fn open(config: &NodeConfig) -> anyhow::Result<Buckets> {
        let s = &config.storage;
        let s3 = |bucket: &str| -> anyhow::Result<Arc<object_store::aws::AmazonS3>> {
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&s.region)
                .with_allow_http(s.allow_http);
            if let Some(endpoint) = &s.endpoint {
                // Self-hosted services address buckets by path.
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if let (Some(key), Some(secret)) = (&s.access_key, &s.secret_key) {
                builder = builder
                    .with_access_key_id(key)
                    .with_secret_access_key(secret);
            }
            Ok(Arc::new(
                builder
                    .build()
                    .with_context(|| format!("S3 bucket `{bucket}`"))?,
            ))
        };
        let open = |bucket: &str| -> anyhow::Result<Arc<dyn ObjectStore>> {
            match s.backend {
                StorageBackend::Local => {
                    let root = s
                        .root
                        .clone()
                        .unwrap_or_else(|| config.data_dir.join("objects"))
                        .join(bucket);
                    std::fs::create_dir_all(&root).with_context(|| {
                        format!("cannot create object storage at {}", root.display())
                    })?;
                    let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
                        .with_context(|| format!("object storage at {}", root.display()))?;
                    Ok(Arc::new(fs))
                }
                StorageBackend::S3 => Ok(s3(bucket)?),
            }
        };
        let scenes_signer: Option<Arc<dyn object_store::signer::Signer>> = match s.backend {
            StorageBackend::S3 => Some(s3(&s.buckets.scenes)?),
            StorageBackend::Local => None,
        };
        Ok(Buckets {
            scenes_signer,
            scenes: open(&s.buckets.scenes)?,
            datasets: open(&s.buckets.datasets)?,
            checkpoints: open(&s.buckets.checkpoints)?,
        })
    }
}
