//! `AdminService`: the operator API behind `sqdctl`.

use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::convert;
use crate::hostmetrics::Hub;
use crate::leader::alerting::Alerting;
use crate::leader::core::{Command, CoreHandle};
use crate::leader::fanout::{Fanout, RegistryShards};
use crate::proto::{self, admin_service_server::AdminService};

pub(crate) struct AdminApi {
    core: CoreHandle,
    reader: Arc<Fanout<RegistryShards>>,
    alerting: Alerting,
    hub: Option<Arc<Hub>>,
}

impl AdminApi {
    pub(crate) fn new(
        core: CoreHandle,
        reader: Arc<Fanout<RegistryShards>>,
        alerting: Alerting,
    ) -> Self {
        AdminApi {
            core,
            reader,
            alerting,
            hub: None,
        }
    }

    pub(crate) fn with_host_metrics(mut self, hub: Arc<Hub>) -> Self {
        self.hub = Some(hub);
        self
    }

    fn hub(&self) -> Result<&Hub, Status> {
        self.hub
            .as_deref()
            .ok_or_else(|| Status::unimplemented("this leader keeps no host metrics"))
    }

    async fn drain(
        &self,
        id: String,
        drain: bool,
    ) -> Result<Response<proto::DrainWorkerResponse>, Status> {
        let result = self
            .core
            .ask(|reply| Command::Drain { id, drain, reply })
            .await??;
        Ok(Response::new(result.into()))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn add_client(
        &self,
        request: Request<proto::AddClientRequest>,
    ) -> Result<Response<proto::AddClientResponse>, Status> {
        let spec = request
            .into_inner()
            .client
            .ok_or_else(|| Status::invalid_argument("AddClient needs a client"))?;
        let result = self
            .core
            .ask(|reply| Command::AddClient {
                spec: spec.into(),
                reply,
            })
            .await??;
        Ok(Response::new(result.into()))
    }

    async fn add_clients(
        &self,
        request: Request<proto::AddClientsRequest>,
    ) -> Result<Response<proto::AddClientsResponse>, Status> {
        let request = request.into_inner();
        let specs = request.clients.into_iter().map(Into::into).collect();
        let result = self
            .core
            .ask(|reply| Command::AddClients {
                specs,
                dry_run: request.dry_run,
                reply,
            })
            .await??;
        Ok(Response::new(result.into()))
    }

    async fn remove_client(
        &self,
        request: Request<proto::RemoveClientRequest>,
    ) -> Result<Response<proto::RemoveClientResponse>, Status> {
        let name = request.into_inner().name;
        self.core
            .ask(|reply| Command::RemoveClient { name, reply })
            .await??;
        Ok(Response::new(proto::RemoveClientResponse {}))
    }

    async fn drain_worker(
        &self,
        request: Request<proto::DrainWorkerRequest>,
    ) -> Result<Response<proto::DrainWorkerResponse>, Status> {
        self.drain(request.into_inner().id, true).await
    }

    async fn undrain_worker(
        &self,
        request: Request<proto::DrainWorkerRequest>,
    ) -> Result<Response<proto::DrainWorkerResponse>, Status> {
        self.drain(request.into_inner().id, false).await
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let status = self.core.ask(|reply| Command::Status { reply }).await?;
        Ok(Response::new(status.into()))
    }

    async fn explain(
        &self,
        request: Request<proto::ExplainRequest>,
    ) -> Result<Response<proto::ExplainResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let result = self
            .core
            .ask(|reply| Command::Explain {
                client: request.client,
                limit,
                reply,
            })
            .await??;
        Ok(Response::new(result.into()))
    }

    async fn forget_worker(
        &self,
        request: Request<proto::ForgetWorkerRequest>,
    ) -> Result<Response<proto::ForgetWorkerResponse>, Status> {
        let id = request.into_inner().id;
        let told = self
            .core
            .ask(|reply| Command::ForgetWorker { id, reply })
            .await??;
        Ok(Response::new(proto::ForgetWorkerResponse { told }))
    }

    type QueryStream = super::query::QueryStream;

    async fn query(
        &self,
        request: Request<proto::QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let stream = super::query::query(self.reader.as_ref(), request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn series(
        &self,
        request: Request<proto::SeriesRequest>,
    ) -> Result<Response<proto::SeriesResponse>, Status> {
        let answer = super::query::series(self.reader.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn metrics(
        &self,
        request: Request<proto::MetricsRequest>,
    ) -> Result<Response<proto::MetricsResponse>, Status> {
        let answer = super::query::metrics(self.reader.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    type FollowAlertsStream = super::alerts::AlertStream;

    async fn follow_alerts(
        &self,
        request: Request<proto::FollowAlertsRequest>,
    ) -> Result<Response<Self::FollowAlertsStream>, Status> {
        let since = request.into_inner().since;
        Ok(Response::new(super::alerts::follow(
            self.alerting.clone(),
            since,
        )))
    }

    async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let answer = super::alerts::list(&self.alerting, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn reload_rules(
        &self,
        _request: Request<proto::ReloadRulesRequest>,
    ) -> Result<Response<proto::ReloadRulesResponse>, Status> {
        Ok(Response::new(super::alerts::reload(&self.alerting).await?))
    }

    async fn list_emitters(
        &self,
        _request: Request<proto::ListEmittersRequest>,
    ) -> Result<Response<proto::ListEmittersResponse>, Status> {
        let emitters = self.hub()?.list().iter().map(convert::emitter).collect();
        Ok(Response::new(proto::ListEmittersResponse { emitters }))
    }

    async fn get_emitter(
        &self,
        request: Request<proto::GetEmitterRequest>,
    ) -> Result<Response<proto::GetEmitterResponse>, Status> {
        let host = request.into_inner().host;
        let emitter = self.hub()?.get(&host).ok_or_else(|| {
            Status::not_found(format!(
                "no emitter {host:?}: the leader has no host values from it (see sqdctl emitters)"
            ))
        })?;
        Ok(Response::new(convert::emitter_values(&emitter)))
    }
}
