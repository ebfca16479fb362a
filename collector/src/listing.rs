//! `sensor.v1.Query/ListWorkloads` and `ListAgents`: the server side (store summaries to protobuf)
//! and the `collector workloads` / `collector agents` commands that ask for them.

use std::sync::Arc;

use proto::v1::{
    ListAgentsRequest, ListAgentsResponse, ListWorkloadsRequest, ListWorkloadsResponse,
};
use tonic::Status;

use crate::store::Store;

/// Answers `ListWorkloads` from the store.
pub async fn workloads(
    _store: Arc<Store>,
    _request: ListWorkloadsRequest,
) -> Result<ListWorkloadsResponse, Status> {
    Err(Status::unimplemented("not yet"))
}

/// Answers `ListAgents` from the store.
pub async fn agents(
    _store: Arc<Store>,
    _request: ListAgentsRequest,
) -> Result<ListAgentsResponse, Status> {
    Err(Status::unimplemented("not yet"))
}
