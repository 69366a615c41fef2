//! The stack lease fences a stale holder: once its lease expired and another took it, the
//! old holder can neither renew nor record anything, and tokens only grow.

use std::time::Duration;

use shiplog_events::event::{Event, Metadata, stream};
use shiplog_events::lease;
use shiplog_events::store::{self, ExpectedVersion};
use shiplog_tests::*;

#[tokio::test]
async fn a_stale_holder_can_neither_renew_nor_record() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let pool = &app.pool;
    let key = lease::stack_key("prod", "shop");
    let ttl = Duration::from_millis(300);

    let old = lease::try_acquire(pool, &key, "worker-a/run-1", ttl)
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        lease::try_acquire(pool, &key, "worker-b/run-2", ttl)
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = lease::try_acquire(pool, &key, "worker-b/run-2", ttl)
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert!(new.token > old.token, "fencing tokens grow");

    // The stale holder wakes up: renewing fails, and so does any append it fences.
    assert!(matches!(
        lease::renew(pool, &old, ttl).await,
        Err(shiplog_events::Error::LeaseLost(_))
    ));
    let mut tx = pool.begin().await.unwrap();
    assert!(matches!(
        lease::check(&mut tx, &old).await,
        Err(shiplog_events::Error::LeaseLost(_))
    ));
    drop(tx);
    let mut tx = pool.begin().await.unwrap();
    lease::check(&mut tx, &new)
        .await
        .expect("the new holder may record");
    let event = Event::ServiceUnchanged {
        deployment: uuid::Uuid::nil(),
        service: "web".into(),
        container: "c".into(),
    };
    store::append(
        &mut tx,
        &stream::deployment(uuid::Uuid::nil()),
        ExpectedVersion::Any,
        &[event],
        &Metadata::actor("t"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Released leases keep their token, so the next holder's is larger still.
    lease::release(pool, &new).await.unwrap();
    let next = lease::try_acquire(pool, &key, "worker-c/run-3", ttl)
        .await
        .unwrap()
        .expect("released");
    assert!(next.token > new.token);
}
