//! Patient search benchmark: 100,000 patients in a throwaway database (generated in SQL
//! with `generate_series`), then the API's own search query (`patients::search_query`) for a
//! set of realistic criteria, timed, with the `EXPLAIN ANALYZE` plan of each.
//!
//! ```sh
//! source .local/services.env
//! cargo run --release --example patient_search_bench -- [ROWS] [RUNS]
//! ```
//! Results are recorded in `docs/performance.md` (## Patient search).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use chrono::NaiveDate;
use coherency::http::patients::{search, search_query, Scope, SearchParams};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let config = coherency::config::Config::load(None)?;
    let mut url = url::Url::parse(config.database_url.expose())?;
    let db = format!("coh_bench_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut admin_url = url.clone();
    admin_url.set_path("/postgres");
    let mut admin = PgConnection::connect(admin_url.as_str()).await?;
    admin.execute(format!(r#"CREATE DATABASE "{db}""#).as_str()).await?;
    url.set_path(&format!("/{db}"));
    let result = run(url.as_str(), rows, runs).await;
    admin.execute(format!(r#"DROP DATABASE "{db}" WITH (FORCE)"#).as_str()).await?;
    result
}

async fn run(url: &str, rows: i64, runs: usize) -> anyhow::Result<()> {
    let pool = PgPool::connect(url).await?;
    coherency::store::pg::migrate(&pool).await?;
    let t = Instant::now();
    // Names from small pools with accents, combined so most names are rare but not unique.
    sqlx::query!(
        r#"
        WITH given(g) AS (SELECT unnest(ARRAY['Ada','Zoë','José','Amara','Hiroshi','Noor','Grace','Łukasz','Søren','Chloé',
                                               'Mohammed','Priya','Olusegun','Ingrid','François','Mei','Diego','Aoife','Kwame','Elif'])),
             family(f) AS (SELECT unnest(ARRAY['Lovelace','Ångström','Müller','Okafor','Tanaka','Haddad','Hopper','Nowak','Kierkegaard','Dubois',
                                                'Rahman','Patel','Adeyemi','Johansson','Lefèvre','Zhang','García','Ó Briain','Mensah','Yılmaz']))
        INSERT INTO patients (id, given_name, family_name, birth_date, sex, mrn, created_at, updated_at)
        SELECT gen_random_uuid(),
               (SELECT g FROM given OFFSET (i * 7) % 20 LIMIT 1),
               (SELECT f FROM family OFFSET (i * 13 + i / 20) % 20 LIMIT 1) || CASE WHEN i % 3 = 0 THEN '' ELSE '-' || (i % 997)::text END,
               DATE '1930-01-01' + (i * 37 % 30000)::int,
               (ARRAY['male','female','other','unknown'])[1 + i % 4],
               'MRN' || lpad(i::text, 7, '0'),
               now(), now()
        FROM generate_series(1, $1::bigint) AS s(i)
        "#,
        rows,
    )
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE patients").execute(&pool).await?;
    println!("inserted {rows} patients in {:.1} s", t.elapsed().as_secs_f64());

    let cases: Vec<(&str, SearchParams)> = vec![
        ("name exact word", SearchParams { name: Some("okafor".into()), limit: 20, ..Default::default() }),
        ("name accent-free", SearchParams { name: Some("angstrom".into()), limit: 20, ..Default::default() }),
        ("name one-letter typo", SearchParams { name: Some("kierkegard".into()), limit: 20, ..Default::default() }),
        ("given + family", SearchParams { name: Some("zoe angstrom-5".into()), limit: 20, ..Default::default() }),
        (
            "birth date",
            SearchParams { birth_date: NaiveDate::from_ymd_opt(1985, 12, 10), limit: 20, ..Default::default() },
        ),
        ("mrn", SearchParams { mrn: Some("MRN0054321".into()), limit: 20, ..Default::default() }),
        ("list first page", SearchParams { limit: 20, ..Default::default() }),
    ];
    println!("\n| query | rows | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|");
    let mut plans = vec![];
    for (label, p) in &cases {
        let mut times = vec![];
        let mut n = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let (items, _) = search(&pool, p, &Scope::All).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            n = items.len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        println!("| {label} | {n} | {:.2} | {:.2} | {:.2} |", pct(0.5), pct(0.95), pct(1.0));
        // The same statement, inlined for EXPLAIN (the plan for the parameter values used).
        let mut qb = search_query(p, &Scope::All);
        let sql = qb.sql().to_string();
        let mut conn = pool.acquire().await?;
        conn.execute("SET pg_trgm.word_similarity_threshold = 0.5").await?;
        conn.execute(format!("PREPARE q AS {sql}").as_str()).await?;
        let args = explain_args(p);
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS OFF, TIMING OFF, SUMMARY OFF, COSTS OFF) EXECUTE q({args})"
        ))
        .fetch_all(&mut *conn)
        .await?;
        conn.execute("DEALLOCATE q").await?;
        let _ = qb.build();
        plans.push((label, plan));
    }
    for (label, plan) in plans {
        println!("\n{label}:\n    {}", plan.join("\n    "));
    }
    pool.close().await;
    Ok(())
}

/// The bind values of `search_query` in order, as SQL literals.
fn explain_args(p: &SearchParams) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut args = vec![];
    if let Some(n) = &p.name {
        for w in n.split_whitespace() {
            let w = w.to_lowercase();
            args.push(q(&w));
            args.push(q(&w));
        }
    }
    if let Some(d) = p.birth_date {
        args.push(q(&d.to_string()));
    }
    if let Some(m) = &p.mrn {
        args.push(q(coherency::http::patients::DEFAULT_ORG));
        args.push(q(m));
    }
    args.push((p.limit + 1).to_string());
    args.join(", ")
}
