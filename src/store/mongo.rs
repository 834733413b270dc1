//! MongoDB client and database handle. The client is made on the store I/O runtime
//! ([`super::io_runtime`]), so its connection pool and monitors run there and no request
//! waits for the runtime thread that opened it.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::ClientOptions;

use super::{Unreachable, CONNECT_TIMEOUT};
use crate::config::Config;

pub async fn connect(config: &Config) -> Result<mongodb::Database, Unreachable> {
    let unreachable = |reason: String| Unreachable { service: "mongo", url: config.mongo_url.masked(), reason };
    let mut options = ClientOptions::parse(config.mongo_url.expose()).await.map_err(|e| unreachable(e.to_string()))?;
    options.server_selection_timeout = Some(CONNECT_TIMEOUT);
    options.connect_timeout = Some(Duration::from_secs(3));
    options.app_name = Some("coherency".into());
    let client = super::on_io(async move { mongodb::Client::with_options(options) })
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let db = client.database(&config.mongo_database);
    ping(&db).await.map_err(|e| unreachable(first_line(&e.to_string())))?;
    Ok(db)
}

pub async fn ping(db: &mongodb::Database) -> Result<(), mongodb::error::Error> {
    db.run_command(doc! { "ping": 1 }).await.map(|_| ())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(300).collect()
}
