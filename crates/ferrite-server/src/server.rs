//! The listener: accepts connections until shutdown, one task per client.

use ferrite_db::shared::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Accept connections until shutdown. Returns when the listener has stopped
/// and every connection task has been told to stop.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_tx.subscribe();
    loop {
        tokio::select! {
            res = listener.accept() => {
                match res {
                    Ok((sock, addr)) => {
                        tracing::debug!("Accepted {addr}");
                        let shared = shared.clone();
                        let maxclients = shared.config.read().maxclients as usize;
                        if shared.connected.load(Ordering::Relaxed) >= maxclients {
                            shared.store.lock().stats.rejected_connections += 1;
                            tokio::spawn(crate::conn::reject_max_clients(sock));
                            continue;
                        }
                        tokio::spawn(async move {
                            crate::conn::handle(sock, addr, shared).await;
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: log and keep serving the clients we have.
                        tracing::warn!("accept failed: {e}");
                        tokio::task::yield_now().await;
                    }
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Background work ten times a second (Redis's `serverCron` at `hz 10`):
/// the instantaneous rates' samples, and active key expiry, holding the
/// store lock at most 1 ms per run.
pub async fn cron(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let commands = shared.store.lock().stats.total_commands;
        shared
            .metrics
            .sample(ferrite_db::shared::now_ms(), commands);
        // Keys do not expire actively during DEBUG SET-ACTIVE-EXPIRE 0 or
        // a CLIENT PAUSE (Redis pauses expiry with writes).
        if shared
            .active_expire
            .load(std::sync::atomic::Ordering::Relaxed)
            && shared.paused(ferrite_db::shared::now_ms()).is_none()
        {
            ferrite_db::expire::run_active(&shared, std::time::Duration::from_millis(1));
        }
    }
}
