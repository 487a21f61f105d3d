//! The shared limiter store: GCRA state and provider pauses in Redis, so that every process of
//! a fleet obeys one limit.

/// Checks a `store.redis` URL's shape without connecting.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or("must be a redis:// or rediss:// URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host: redis://host:6379/0");
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("has a port that is not a number from 1 to 65535");
        }
    }
    if let Some(db) = rest
        .split_once('/')
        .map(|(_, db)| db)
        .filter(|d| !d.is_empty())
    {
        if db.parse::<u32>().is_err() {
            return Err("has a database that is not a number (redis://host:6379/0)");
        }
    }
    Ok(())
}
