//! The mutation path, the change feed and admin credentials, against a
//! real SQLite file shared by two services as two hosts share one database.

use std::sync::Arc;

use sqlx::Row;

use super::*;

/// Every connector is loaded, has no secret fields and takes any config.
struct AnyConnector;

impl ConnectorCatalog for AnyConnector {
    fn secret_fields(&self, _connector: &str) -> Option<Vec<String>> {
        Some(Vec::new())
    }
    fn validate(
        &self,
        _connector: &str,
        _config: &serde_json::Value,
    ) -> futures::future::BoxFuture<'static, std::result::Result<Vec<String>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Two services ("hosts") on one database file.
async fn two_hosts(dir: &tempfile::TempDir) -> (Licensing, Licensing) {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let sealer = || Sealer::from_key(&[7u8; 32]);
    let a = Licensing::open(
        Db::connect(&url).await.unwrap(),
        sealer(),
        Arc::new(AnyConnector),
    )
    .await
    .unwrap();
    let b = Licensing::open(
        Db::connect(&url).await.unwrap(),
        sealer(),
        Arc::new(AnyConnector),
    )
    .await
    .unwrap();
    (a, b)
}

fn operator() -> Actor {
    Actor {
        account_id: "acc_ops".into(),
        name: "ops@leansync.test".into(),
        customer_id: None,
        impersonal: false,
    }
}

/// A customer with `number` licensed to a webhook installation; returns
/// (customer id, license id, key).
async fn licensed(l: &Licensing, name: &str, number: &str) -> (String, String, Secret) {
    let ops = operator();
    let c = l.create_customer(&ops, name).await.unwrap();
    l.add_numbers(&ops, &c.id, &[number.into()]).await.unwrap();
    let i = l
        .create_installation(
            &ops,
            &c.id,
            NewInstallation {
                connector: "webhook".into(),
                config: serde_json::json!({}),
                granted_hosts: Vec::new(),
                deliver_internal: false,
            },
        )
        .await
        .unwrap();
    let lic = l.order_licenses(&ops, &i.id, 1).await.unwrap().remove(0);
    let (_, key) = l.provision(&ops, &lic.id).await.unwrap();
    l.assign(&ops, &lic.id, number).await.unwrap();
    (c.id, lic.id, key)
}

async fn count(l: &Licensing, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&l.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

#[tokio::test]
async fn every_mutation_commits_with_one_audit_entry_and_one_change_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = two_hosts(&dir).await;
    let (cid, _, _) = licensed(&a, "Muster AG", "+41 44 668 18 00").await;
    // customer, numbers, installation, order, provision, assign
    assert_eq!(count(&a, "audit").await, 6);
    assert_eq!(count(&a, "changes").await, 6);
    assert_eq!(a.applied_change(), 6, "the index reflects every change");

    // Refused half-way (the second number is another customer's): nothing
    // of it is stored, audited or recorded.
    let other = a.create_customer(&operator(), "Other GmbH").await.unwrap();
    let err = a
        .add_numbers(
            &operator(),
            &other.id,
            &["+41 44 668 18 01".into(), "+41 44 668 18 00".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "number_taken");
    assert_eq!(count(&a, "numbers").await, 1);
    assert_eq!(count(&a, "audit").await, 7);
    assert_eq!(count(&a, "changes").await, 7);
    let log = a.audit_log(&operator(), Some(&cid)).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "customer.create",
            "numbers.add",
            "installation.create",
            "license.order",
            "license.provision",
            "license.assign"
        ]
    );
}

#[tokio::test]
async fn a_key_made_on_one_host_works_on_the_other_and_its_revocation_too() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    let (_, _, first) = licensed(&a, "First AG", "+41 44 668 18 00").await;
    assert!(
        b.index().key(first.expose()).is_none(),
        "b has not caught up yet"
    );
    b.catch_up().await.unwrap();
    assert!(b.index().key(first.expose()).is_some());

    // A second customer's change reloads that customer alone: the first
    // one's entries stay as they are.
    let (_, lic, second) = licensed(&a, "Second AG", "+41 44 668 18 10").await;
    b.catch_up().await.unwrap();
    let scope = b.index().key(second.expose()).cloned().unwrap();
    assert_eq!(scope.license_id, lic);
    assert!(b.index().key(first.expose()).is_some());
    let n = E164::parse("+41446681810").unwrap();
    assert_eq!(b.index().targets(&n).len(), 1);
    assert!(b.monitored_numbers().borrow().contains(&n));

    a.revoke_key(&operator(), &scope.key_id).await.unwrap();
    b.catch_up().await.unwrap();
    assert!(b.index().key(second.expose()).is_none());
    assert!(b.index().targets(&n).is_empty());
    assert!(!b.monitored_numbers().borrow().contains(&n));
    assert!(b.index().key(first.expose()).is_some());
    assert_eq!(a.applied_change(), b.applied_change());
}

#[tokio::test]
async fn the_follower_applies_another_hosts_change_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    b.follow_changes();
    let (_, _, key) = licensed(&a, "Follow AG", "+41 44 668 18 00").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.index().key(key.expose()).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "b never applied a's changes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_leave_the_index_as_the_database_says() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = two_hosts(&dir).await;
    let (_, lic, first) = licensed(&a, "Race AG", "+41 44 668 18 00").await;
    let rotations: Vec<_> = (0..8)
        .map(|_| {
            let (a, lic) = (a.clone(), lic.clone());
            tokio::spawn(async move { a.rotate_key(&operator(), &lic).await.unwrap().1 })
        })
        .collect();
    let mut keys = Vec::new();
    for r in rotations {
        keys.push(r.await.unwrap());
    }
    let view = a.license(&operator(), &lic).await.unwrap();
    let live: Vec<_> = view.keys.iter().filter(|k| !k.revoked).collect();
    assert_eq!(live.len(), 1, "one key stays: {:?}", view.keys);
    let resolving: Vec<_> = keys
        .iter()
        .filter(|k| a.index().key(k.expose()).is_some())
        .collect();
    assert_eq!(resolving.len(), 1, "exactly the live key resolves");
    assert_eq!(resolving[0].masked(), live[0].masked);
    assert!(a.index().key(first.expose()).is_none());
}

#[tokio::test]
async fn a_rotated_token_replaces_the_old_one_on_every_host() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    let (acc, old) = a
        .create_account(&operator(), None, "ops2@leansync.test", false)
        .await
        .unwrap();
    let me = b.authenticate(old.expose()).await.unwrap();
    assert_eq!(me.account_id, acc.id);
    assert!(acc.token_expires_at_ms.unwrap() > now_ms() as i64 + 89 * 86_400_000);

    // The account rotates its own token on host a.
    let (_, new) = a.rotate_token(&me, &acc.id).await.unwrap();
    assert_eq!(
        b.authenticate(old.expose()).await.unwrap_err(),
        Refusal::Unknown
    );
    assert_eq!(
        b.authenticate(new.expose()).await.unwrap().account_id,
        acc.id
    );

    // An expired token is refused with its date.
    sqlx::query("UPDATE accounts SET token_expires_at_ms = 1000 WHERE id = $1")
        .bind(&acc.id)
        .execute(&a.db.pool)
        .await
        .unwrap();
    let err = b.authenticate(new.expose()).await.unwrap_err();
    assert_eq!(err, Refusal::Expired(1000));
    assert!(err.message().contains("1970-01-01"), "{}", err.message());
}

#[tokio::test]
async fn disabled_accounts_and_admins_of_blocked_customers_cannot_act() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    let ops = operator();
    let c = a.create_customer(&ops, "Muster AG").await.unwrap();
    let (anna, token) = a
        .create_account(&ops, Some(&c.id), "anna@muster.test", false)
        .await
        .unwrap();
    let (_, ops_token) = a
        .create_account(&ops, None, "ops2@leansync.test", false)
        .await
        .unwrap();
    let anna_actor = b.authenticate(token.expose()).await.unwrap();

    a.set_account_disabled(&ops, &anna.id, Some("left the company"))
        .await
        .unwrap();
    assert_eq!(
        b.authenticate(token.expose()).await.unwrap_err(),
        Refusal::Disabled("left the company".into())
    );
    assert!(
        b.recheck(&anna_actor, 0).await.is_err(),
        "her portal session ends"
    );
    let listed = b.accounts(&ops, Some(&c.id)).await.unwrap();
    assert_eq!(
        listed[0].disabled_reason.as_deref(),
        Some("left the company")
    );
    a.set_account_disabled(&ops, &anna.id, None).await.unwrap();
    assert!(b.authenticate(token.expose()).await.is_ok());

    a.set_customer_block(&ops, &c.id, Some("unpaid invoices"))
        .await
        .unwrap();
    assert_eq!(
        b.authenticate(token.expose()).await.unwrap_err(),
        Refusal::CustomerBlocked("unpaid invoices".into())
    );
    assert!(b.recheck(&anna_actor, 0).await.is_err());
    assert!(
        b.authenticate(ops_token.expose()).await.is_ok(),
        "operators are not a customer's admins"
    );

    let log = a.audit_log(&ops, Some(&c.id)).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"account.disable") && actions.contains(&"account.enable"));
}

#[tokio::test]
async fn admins_manage_only_accounts_in_their_reach_and_never_the_last_operator() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = two_hosts(&dir).await;
    let ops = operator();
    let (only, _) = a
        .create_account(&ops, None, "only@leansync.test", false)
        .await
        .unwrap();
    let err = a
        .set_account_disabled(&ops, &only.id, Some("test"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "last_operator");
    assert_eq!(
        a.delete_account(&ops, &only.id).await.unwrap_err().code,
        "last_operator"
    );

    let one = a.create_customer(&ops, "One AG").await.unwrap();
    let two = a.create_customer(&ops, "Two AG").await.unwrap();
    let (ann, t1) = a
        .create_account(&ops, Some(&one.id), "ann@one.test", false)
        .await
        .unwrap();
    let (bob, _) = a
        .create_account(&ops, Some(&two.id), "bob@two.test", false)
        .await
        .unwrap();
    let ann_actor = a.authenticate(t1.expose()).await.unwrap();
    for err in [
        a.rotate_token(&ann_actor, &bob.id).await.unwrap_err(),
        a.set_account_disabled(&ann_actor, &bob.id, Some("x"))
            .await
            .unwrap_err(),
        a.delete_account(&ann_actor, &only.id).await.unwrap_err(),
    ] {
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    }
    assert_eq!(
        a.set_account_disabled(&ann_actor, &ann.id, Some("  "))
            .await
            .unwrap_err()
            .code,
        "invalid_reason"
    );
    a.delete_account(&ann_actor, &ann.id).await.unwrap();
    assert_eq!(
        a.authenticate(t1.expose()).await.unwrap_err(),
        Refusal::Unknown
    );
}

fn admin_of(cid: &str) -> Actor {
    Actor {
        account_id: format!("acc_{cid}"),
        name: format!("admin@{cid}.test"),
        customer_id: Some(cid.to_owned()),
        impersonal: false,
    }
}

#[tokio::test]
async fn a_number_claimed_through_a_customers_own_pbx_never_blocks_the_verified_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    let ops = operator();
    let n = "+41 44 668 18 50";
    let e164 = E164::parse(n).unwrap();
    // Customer X claims the number through its own PBX and licenses it.
    let (x, x_lic, _) = licensed(&a, "Squatter AG", "+41 44 668 18 51").await;
    let adm = admin_of(&x);
    assert_eq!(
        a.create_telephony_account(&adm, &x, "sim", serde_json::json!({ "numbers": [n] }), None)
            .await
            .unwrap_err()
            .code,
        "sim_operator_only"
    );
    let pbx = a
        .create_telephony_account(
            &adm,
            &x,
            "sip",
            serde_json::json!({ "server": "pbx.squatter.test:5060", "username": "u", "numbers": [n] }),
            Some("pbx-password"),
        )
        .await
        .unwrap();
    a.grant_consent(&adm, &pbx.id, "numbers").await.unwrap();
    a.import_numbers(&adm, &pbx.id, &[n.into()]).await.unwrap();
    a.assign(&ops, &x_lic, n).await.unwrap();
    assert_eq!(
        a.license(&ops, &x_lic).await.unwrap().number.as_deref(),
        Some(e164.as_str())
    );
    // The real owner, verified by the operator, is not locked out: the
    // number moves, X's claim ends and both are told.
    let y = a.create_customer(&ops, "Owner GmbH").await.unwrap();
    let got = a.add_numbers(&ops, &y.id, &[n.into()]).await.unwrap();
    assert!(
        got.iter()
            .any(|v| v.e164 == e164.as_str() && v.telephony_account_id.is_none())
    );
    assert!(
        a.numbers(&ops, &x)
            .await
            .unwrap()
            .iter()
            .all(|v| v.e164 != e164.as_str())
    );
    assert_eq!(
        a.license(&ops, &x_lic).await.unwrap().number,
        None,
        "X's license is unassigned"
    );
    assert!(
        a.index().targets(&e164).is_empty(),
        "no app of X sees the number's calls"
    );
    let told = |c: &str| {
        let (l, c) = (a.clone(), c.to_owned());
        async move {
            l.notifications(&operator(), &c)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.kind)
                .collect::<Vec<_>>()
        }
    };
    assert!(told(&x).await.contains(&"number.moved_away".to_owned()));
    assert!(told(&y.id).await.contains(&"number.moved_here".to_owned()));
    // The other host learns it from the change feed.
    b.catch_up().await.unwrap();
    assert_eq!(
        b.telephony_lines().borrow().numbers.get(&e164),
        None,
        "no longer served through X's PBX"
    );
    assert!(b.index().targets(&e164).is_empty());

    // A number verified for one customer is not taken by a hand entry for
    // another: that needs the dispute path, audited with its reason.
    let z = a.create_customer(&ops, "Claimant SA").await.unwrap();
    let err = a.add_numbers(&ops, &z.id, &[n.into()]).await.unwrap_err();
    assert_eq!(err.code, "number_taken");
    assert!(err.message.contains("/move"), "{}", err.message);
    let err = a.move_number(&ops, n, &z.id, " ").await.unwrap_err();
    assert_eq!(err.code, "invalid_reason");
    assert!(
        a.move_number(&adm, n, &z.id, "mine").await.is_err(),
        "customer admins cannot move"
    );
    a.move_number(&ops, n, &z.id, "ported to Claimant SA, ticket 4711")
        .await
        .unwrap();
    assert!(
        a.numbers(&ops, &z.id)
            .await
            .unwrap()
            .iter()
            .any(|v| v.e164 == e164.as_str())
    );
    let log = a.audit_log(&ops, Some(&z.id)).await.unwrap();
    let moved = log
        .iter()
        .find(|e| e.action == "number.move")
        .expect("audited");
    assert!(
        moved
            .after
            .as_ref()
            .unwrap()
            .to_string()
            .contains("ticket 4711")
    );
}

/// 200 concurrent key rotations and re-assignments over 4 licenses, spread
/// over two hosts: afterwards both indexes equal one freshly loaded from the
/// database, and no key that was ever replaced resolves anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_revokes_and_assigns_leave_every_index_as_the_database_says() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    let ops = operator();
    let (cid, first, k0) = licensed(&a, "Storm AG", "+41 44 668 19 00").await;
    let numbers: Vec<String> = (1..=8).map(|i| format!("+41 44 668 19 0{i}")).collect();
    a.add_numbers(&ops, &cid, &numbers).await.unwrap();
    let inst = a.license(&ops, &first).await.unwrap().installation_id;
    let mut licenses = vec![first];
    let mut keys: Vec<Secret> = vec![k0];
    for lic in a.order_licenses(&ops, &inst, 3).await.unwrap() {
        let (_, key) = a.provision(&ops, &lic.id).await.unwrap();
        licenses.push(lic.id);
        keys.push(key);
    }
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            let lic = licenses[i % licenses.len()].clone();
            let number = numbers[(i * 7) % numbers.len()].clone();
            tokio::spawn(async move {
                if i % 3 == 0 {
                    host.rotate_key(&operator(), &lic)
                        .await
                        .ok()
                        .map(|(_, k)| k)
                } else {
                    // May be refused (number already licensed to this app).
                    let _ = host.assign(&operator(), &lic, &number).await;
                    None
                }
            })
        })
        .collect();
    for t in tasks {
        keys.extend(t.await.unwrap());
    }
    a.catch_up().await.unwrap();
    b.catch_up().await.unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let fresh = Licensing::open(
        Db::connect(&url).await.unwrap(),
        Sealer::from_key(&[7u8; 32]),
        Arc::new(AnyConnector),
    )
    .await
    .unwrap();
    let view = |l: &Licensing| {
        let idx = l.index();
        let mut targets: Vec<(String, Vec<String>)> =
            std::iter::once("+41 44 668 19 00".to_owned())
                .chain(numbers.iter().cloned())
                .map(|n| {
                    let e = E164::parse(&n).unwrap();
                    let mut t: Vec<String> = idx
                        .targets(&e)
                        .iter()
                        .map(|t| t.license_id.clone())
                        .collect();
                    t.sort();
                    (n, t)
                })
                .collect();
        targets.sort();
        let resolving: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                idx.key(k.expose())
                    .map(|s| format!("{}:{}", s.license_id, s.number))
            })
            .collect();
        (targets, resolving)
    };
    let truth = view(&fresh);
    assert_eq!(view(&a), truth, "host A's index differs from the database");
    assert_eq!(view(&b), truth, "host B's index differs from the database");
    // One live key per license, each the license's current one.
    assert_eq!(truth.1.len(), licenses.len(), "{:?}", truth.1);
    for lic in &licenses {
        let live: Vec<_> = a
            .license(&ops, lic)
            .await
            .unwrap()
            .keys
            .into_iter()
            .filter(|k| !k.revoked)
            .collect();
        assert_eq!(live.len(), 1, "{lic}: {live:?}");
    }
}

#[tokio::test]
async fn an_event_ticket_opens_on_every_host_and_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&dir).await;
    let t = a.seal_ticket("lsk_secret", 1_234);
    assert!(!t.contains("lsk_secret"));
    assert_eq!(b.open_ticket(&t), Some(("lsk_secret".to_owned(), 1_234)));
    let mut forged = t.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(b.open_ticket(&String::from_utf8(forged).unwrap()), None);
    assert_eq!(b.open_ticket("lst_nonsense"), None);
}

#[tokio::test]
async fn automatic_blocks_tell_the_customer_and_stop_a_plugins_dialling() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = two_hosts(&dir).await;
    let ops = operator();
    let (cid, lic, _) = licensed(&a, "Toll AG", "+41 44 668 18 70").await;
    let view = a.license(&ops, &lic).await.unwrap();
    let kid = view.keys[0].id.clone();
    let kinds = |l: Licensing, c: String| async move {
        l.notifications(&operator(), &c)
            .await
            .unwrap()
            .into_iter()
            .map(|n| (n.kind, n.message))
            .collect::<Vec<_>>()
    };
    // An operator's block is the operator's business; an automatic one is
    // told to the customer, with what to do.
    a.set_key_block(&ops, &kid, Some("fraud report"))
        .await
        .unwrap();
    assert!(kinds(a.clone(), cid.clone()).await.is_empty());
    a.set_key_block(&ops, &kid, None).await.unwrap();
    a.set_key_block(&Actor::system(), &kid, Some("automatic: burst rule"))
        .await
        .unwrap();
    let told = kinds(a.clone(), cid.clone()).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].0, "key.auto_blocked");
    assert!(
        told[0].1.contains("burst rule") && told[0].1.contains(&kid),
        "{told:?}"
    );

    let iid = view.installation_id.clone();
    assert_eq!(a.installation_dial_block(&iid).await.unwrap(), None);
    assert!(
        a.set_installation_dial_block(&admin_of(&cid), &iid, Some("x"))
            .await
            .is_err(),
        "customer admins cannot lift or set it"
    );
    a.set_installation_dial_block(&Actor::system(), &iid, Some("automatic: daily budget"))
        .await
        .unwrap();
    assert_eq!(
        a.installation_dial_block(&iid).await.unwrap().as_deref(),
        Some("automatic: daily budget")
    );
    let told = kinds(a.clone(), cid.clone()).await;
    assert_eq!(told.last().unwrap().0, "installation.dial_blocked");
    a.set_installation_dial_block(&ops, &iid, None)
        .await
        .unwrap();
    assert_eq!(a.installation_dial_block(&iid).await.unwrap(), None);
    let log = a.audit_log(&ops, Some(&cid)).await.unwrap();
    for want in [
        "installation.dial_block",
        "installation.dial_unblock",
        "key.block",
    ] {
        assert!(log.iter().any(|e| e.action == want), "{want} not audited");
    }
}

#[tokio::test]
async fn a_host_with_another_secret_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b) = two_hosts(&dir).await;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let err = Licensing::open(
        Db::connect(&url).await.unwrap(),
        Sealer::from_key(&[9u8; 32]),
        Arc::new(AnyConnector),
    )
    .await
    .err()
    .expect("started with another key")
    .to_string();
    assert!(
        err.contains("secret_key_file") && err.contains("copy the first host's key"),
        "{err}"
    );
}
