//! The pool's connections: one multiplexed connection to a single server, or a cluster
//! connection that follows the cluster's slots (and their failovers) by itself.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

pub type Pool = deadpool::managed::Pool<Manager>;

pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the pool connects: one server or a cluster.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per pool, so its size does not matter"
)]
enum Nodes {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// Opens connections with the configured time-outs. (deadpool-redis's cluster manager
/// takes no time-outs, hence a manager of our own.)
pub struct Manager {
    nodes: Nodes,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Manager {
    pub fn new(
        urls: &[String],
        cluster: bool,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let nodes = if cluster {
            Nodes::Cluster(
                ClusterClientBuilder::new(urls.to_vec())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?,
            )
        } else {
            Nodes::Single(redis::Client::open(urls[0].as_str())?)
        };
        Ok(Self {
            nodes,
            connect_timeout,
            response_timeout,
        })
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        match &self.nodes {
            Nodes::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Single)
            }
            Nodes::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// Nothing to check: a connection that breaks is taken out of the pool when a
    /// command on it fails, so handing one out costs no round trip.
    async fn recycle(
        &self,
        _conn: &mut Conn,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        Ok(())
    }
}
