//! A PostgreSQL database per test on the real server (127.0.0.1:5432, or
//! `TOLLGATE_TEST_POSTGRES`), dropped with its connections when the test ends.

pub struct TestDb {
    pub url: String,
    name: String,
}

fn server() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("{}/postgres", server()), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (set TOLLGATE_TEST_POSTGRES to use another)");
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("tg_test_{:016x}", rand::random::<u64>());
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self {
            url: format!("{}/{name}", server()),
            name,
        }
    }

    /// The database's URL through another host:port (a relay in front of the server).
    pub fn url_via(&self, addr: &str) -> String {
        let server = server();
        let (scheme_user, _) = server
            .rsplit_once('@')
            .unwrap_or(("postgres://postgres", ""));
        format!("{scheme_user}@{addr}/{}", self.name)
    }

    /// The server's host:port.
    pub fn server_addr() -> String {
        let server = server();
        let after = server.rsplit_once('@').map_or(server.as_str(), |(_, a)| a);
        after.split('/').next().unwrap_or(after).to_string()
    }

    /// A direct connection, to check what is stored.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}
