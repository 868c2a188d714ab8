//! Contract cases of [`crate::StateStore`]: versioned saves, stale versions,
//! concurrent savers. Each `pub async fn` here takes a fresh [`Backend`];
//! adding a case means adding its name to `contract_suite!` too (the
//! completeness test fails otherwise).

use memlayer_domain::{AgentName, ThreadId};
use serde_json::json;

use super::Backend;
use super::support::{assert_invalid, assert_not_found, tenant, thread};
use crate::StoreError;

pub async fn state_save_and_load_versions(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentName::parse("planner").unwrap();
    let other_agent = AgentName::parse("critic").unwrap();
    assert!(b.states.load(&t, id, &agent).await.unwrap().is_none());
    let v1 = b.states.save(&t, id, &agent, json!({"step": 1}), 0).await.unwrap();
    assert_eq!((v1.version, &v1.state), (1, &json!({"step": 1})));
    let v2 = b.states.save(&t, id, &agent, json!({"step": 2, "notes": ["a"]}), 1).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(b.states.load(&t, id, &agent).await.unwrap(), Some(v2));
    assert!(b.states.load(&t, id, &other_agent).await.unwrap().is_none(), "state is per agent");
    assert_not_found(b.states.load(&tenant("other"), id, &agent).await, "foreign tenant");
}

pub async fn state_stale_version_conflicts(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentName::parse("planner").unwrap();
    b.states.save(&t, id, &agent, json!({"v": 1}), 0).await.unwrap();
    b.states.save(&t, id, &agent, json!({"v": 2}), 1).await.unwrap();
    for stale in [0, 1, 3, 99] {
        let r = b.states.save(&t, id, &agent, json!({"v": "stale"}), stale).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "expected {stale} is stale: {r:?}");
    }
    let now = b.states.load(&t, id, &agent).await.unwrap().unwrap();
    assert_eq!((now.version, now.state), (2, json!({"v": 2})), "no lost update");
}

pub async fn state_concurrent_savers_exactly_one_wins(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentName::parse("planner").unwrap();
    b.states.save(&t, id, &agent, json!({"v": 0}), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (b, t, agent) = (b.clone(), t.clone(), agent.clone());
        tasks.push(tokio::spawn(async move { b.states.save(&t, id, &agent, json!({"writer": i}), 1).await }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(s) => {
                wins += 1;
                assert_eq!(s.version, 2);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer of version 1 wins");
}

pub async fn state_rejects_non_object_and_missing_thread(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentName::parse("planner").unwrap();
    assert_invalid(b.states.save(&t, id, &agent, json!([1]), 0).await, "array state");
    assert_invalid(b.states.save(&t, id, &agent, json!("s"), 0).await, "string state");
    assert_not_found(b.states.save(&t, ThreadId::new(), &agent, json!({}), 0).await, "missing thread");
    assert!(b.states.load(&t, id, &agent).await.unwrap().is_none(), "nothing stored");
    for absurd in [u64::MAX, i64::MAX as u64, memlayer_domain::AgentState::MAX_EXPECTED_VERSION + 1] {
        assert_invalid(b.states.save(&t, id, &agent, json!({}), absurd).await, "expected version past i64");
    }
    assert!(b.states.load(&t, id, &agent).await.unwrap().is_none(), "nothing stored");
}
