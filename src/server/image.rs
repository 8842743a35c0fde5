//! ImageService: crisp manages no images, but kubelet, crictl and critest open this service
//! and read the image filesystem's usage, so those calls answer truthfully (the usage of the
//! filesystem holding crisp's root). It never pulls, lists or removes an image: those calls
//! answer empty or Unimplemented.

use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::call::Call;
use super::Shared;
use crate::error::Error;

pub struct ImageApi {
    shared: Arc<Shared>,
}

impl ImageApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        ImageApi { shared }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        _req: Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        Call::read("ListImages").finish(Ok(cri::ListImagesResponse::default()))
    }

    async fn image_status(
        &self,
        _req: Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        // An empty answer is CRI's "image not present".
        Call::read("ImageStatus").finish(Ok(cri::ImageStatusResponse::default()))
    }

    async fn pull_image(
        &self,
        _req: Request<cri::PullImageRequest>,
    ) -> Reply<cri::PullImageResponse> {
        Call::read("PullImage").finish(Err(Error::Unimplemented { what: "PullImage" }))
    }

    async fn remove_image(
        &self,
        _req: Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        Call::read("RemoveImage").finish(Err(Error::Unimplemented {
            what: "RemoveImage",
        }))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let call = Call::read("ImageFsInfo");
        let root = self.shared.config.root.clone();
        let usage = tokio::task::spawn_blocking(move || filesystem_usage(&root))
            .await
            .map_err(|e| Error::io("reading filesystem usage", std::io::Error::other(e)))
            .and_then(|r| r);
        call.finish(usage.map(|fs| cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

/// The real usage of the filesystem holding crisp's root dir.
fn filesystem_usage(root: &std::path::Path) -> crate::Result<cri::FilesystemUsage> {
    let stat = nix::sys::statvfs::statvfs(root)
        .map_err(|e| Error::io(format!("statvfs {}", root.display()), e.into()))?;
    let frsize = stat.fragment_size() as u64;
    let used_bytes = (stat.blocks() as u64).saturating_sub(stat.blocks_free() as u64) * frsize;
    let inodes_used = (stat.files() as u64).saturating_sub(stat.files_free() as u64);
    Ok(cri::FilesystemUsage {
        timestamp: crate::clock::now_nanos(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: root.display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value { value: used_bytes }),
        inodes_used: Some(cri::UInt64Value { value: inodes_used }),
    })
}
