//! The API endpoints the simulator answers, and routing of request paths.

use hyper::Method;

/// One endpoint of the Tinker API (paths under `/api/v1/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST client/config`.
    ClientConfig,
    /// `POST client/dynamic_config`.
    DynamicConfig,
    /// `POST create_session`.
    CreateSession,
    /// `POST session_heartbeat`.
    SessionHeartbeat,
    /// `POST create_sampling_session`.
    CreateSamplingSession,
    /// `POST join_sampling_session`.
    JoinSamplingSession,
    /// `GET samplers/{id}`.
    GetSampler,
    /// `POST asample`.
    Asample,
    /// `POST retrieve_future`.
    RetrieveFuture,
    /// `POST retrieve_futures`.
    RetrieveFutures,
    /// `POST cancel_future`.
    CancelFuture,
    /// `POST telemetry`.
    Telemetry,
    /// `POST sessions/{id}/finish`.
    FinishSession,
    /// `POST auth/token`.
    AuthToken,
    /// `GET|POST healthz`.
    Healthz,
    /// `GET|POST get_server_capabilities`.
    ServerCapabilities,
}

impl Endpoint {
    /// Every endpoint, in a fixed order ([`Endpoint::index`]).
    pub const ALL: [Endpoint; 16] = [
        Endpoint::ClientConfig,
        Endpoint::DynamicConfig,
        Endpoint::CreateSession,
        Endpoint::SessionHeartbeat,
        Endpoint::CreateSamplingSession,
        Endpoint::JoinSamplingSession,
        Endpoint::GetSampler,
        Endpoint::Asample,
        Endpoint::RetrieveFuture,
        Endpoint::RetrieveFutures,
        Endpoint::CancelFuture,
        Endpoint::Telemetry,
        Endpoint::FinishSession,
        Endpoint::AuthToken,
        Endpoint::Healthz,
        Endpoint::ServerCapabilities,
    ];

    /// The canonical name used in scenarios, stats and the log.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ClientConfig => "client/config",
            Endpoint::DynamicConfig => "client/dynamic_config",
            Endpoint::CreateSession => "create_session",
            Endpoint::SessionHeartbeat => "session_heartbeat",
            Endpoint::CreateSamplingSession => "create_sampling_session",
            Endpoint::JoinSamplingSession => "join_sampling_session",
            Endpoint::GetSampler => "samplers",
            Endpoint::Asample => "asample",
            Endpoint::RetrieveFuture => "retrieve_future",
            Endpoint::RetrieveFutures => "retrieve_futures",
            Endpoint::CancelFuture => "cancel_future",
            Endpoint::Telemetry => "telemetry",
            Endpoint::FinishSession => "sessions/finish",
            Endpoint::AuthToken => "auth/token",
            Endpoint::Healthz => "healthz",
            Endpoint::ServerCapabilities => "get_server_capabilities",
        }
    }

    /// Parses a canonical name or one of the aliases `client_config`,
    /// `dynamic_config`, `heartbeat`, `finish`, `get_sampler`.
    pub fn from_name(name: &str) -> Option<Self> {
        let alias = match name {
            "client_config" => Some(Endpoint::ClientConfig),
            "dynamic_config" | "client_dynamic_config" => Some(Endpoint::DynamicConfig),
            "heartbeat" => Some(Endpoint::SessionHeartbeat),
            "finish" | "finish_session" => Some(Endpoint::FinishSession),
            "get_sampler" | "samplers/{id}" => Some(Endpoint::GetSampler),
            _ => None,
        };
        alias.or_else(|| Self::ALL.into_iter().find(|e| e.name() == name))
    }

    /// Position in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

/// The simulator's own control endpoints under `/_sim/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /_sim/stats`.
    Stats,
    /// `GET /_sim/log`.
    Log,
    /// `GET|POST /_sim/scenario`.
    Scenario,
    /// `POST /_sim/reset`.
    Reset,
    /// `POST /_sim/expected`.
    Expected,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// An API endpoint, with the `{id}` path parameter when it has one.
    Api(Endpoint, Option<String>),
    /// A known API path with the wrong method.
    MethodNotAllowed(Endpoint),
    /// A control endpoint.
    Admin(AdminRoute),
    /// Anything else.
    NotFound,
}

impl Route {
    /// Routes `path`. API paths are recognised after the first `/api/v1/`
    /// anywhere in the path, so a base URL with a prefix works too.
    pub fn parse(method: &Method, path: &str) -> Route {
        if let Some(rest) = path.strip_prefix("/_sim/") {
            return match rest.trim_end_matches('/') {
                "stats" => Route::Admin(AdminRoute::Stats),
                "log" => Route::Admin(AdminRoute::Log),
                "scenario" => Route::Admin(AdminRoute::Scenario),
                "reset" => Route::Admin(AdminRoute::Reset),
                "expected" => Route::Admin(AdminRoute::Expected),
                _ => Route::NotFound,
            };
        }
        let Some(idx) = path.find("/api/v1/") else {
            return Route::NotFound;
        };
        let rest = &path[idx + "/api/v1/".len()..];
        let (endpoint, param, get_ok, post_ok) = if let Some(id) = rest.strip_prefix("samplers/") {
            if id.is_empty() || id.contains('/') {
                return Route::NotFound;
            }
            (Endpoint::GetSampler, Some(id.to_string()), true, false)
        } else if let Some(inner) = rest.strip_prefix("sessions/") {
            match inner.strip_suffix("/finish") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    (Endpoint::FinishSession, Some(id.to_string()), false, true)
                }
                _ => return Route::NotFound,
            }
        } else {
            match Endpoint::ALL.into_iter().find(|e| {
                e.name() == rest && !matches!(e, Endpoint::GetSampler | Endpoint::FinishSession)
            }) {
                Some(e @ (Endpoint::Healthz | Endpoint::ServerCapabilities)) => {
                    (e, None, true, true)
                }
                Some(e) => (e, None, false, true),
                None => return Route::NotFound,
            }
        };
        let ok = (get_ok && method == Method::GET) || (post_ok && method == Method::POST);
        if ok {
            Route::Api(endpoint, param)
        } else {
            Route::MethodNotAllowed(endpoint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse(&Method::POST, "/api/v1/asample"),
            Route::Api(Endpoint::Asample, None)
        );
        assert_eq!(
            Route::parse(&Method::POST, "/services/x/api/v1/retrieve_future"),
            Route::Api(Endpoint::RetrieveFuture, None)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/api/v1/samplers/abc"),
            Route::Api(Endpoint::GetSampler, Some("abc".into()))
        );
        assert_eq!(
            Route::parse(&Method::POST, "/api/v1/sessions/s1/finish"),
            Route::Api(Endpoint::FinishSession, Some("s1".into()))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/api/v1/asample"),
            Route::MethodNotAllowed(Endpoint::Asample)
        );
        assert_eq!(Route::parse(&Method::POST, "/api/v1/nope"), Route::NotFound);
        assert_eq!(
            Route::parse(&Method::GET, "/_sim/stats"),
            Route::Admin(AdminRoute::Stats)
        );
    }

    #[test]
    fn names_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
            assert_eq!(Endpoint::ALL[e.index()], e);
        }
        assert_eq!(
            Endpoint::from_name("heartbeat"),
            Some(Endpoint::SessionHeartbeat)
        );
    }
}
