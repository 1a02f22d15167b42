//! The smallest useful otp-sidecar client: send one OTP, print the SID or the error.
//!
//!     cargo run --example client -- /run/otp-sidecar/otp.sock 123456 +14155550100 ACME

use otp_sidecar::client::{Client, Endpoint};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, otp, phone, sender] = args.as_slice() else {
        anyhow::bail!("usage: client SOCKET OTP PHONE SENDER");
    };
    let mut client = Client::connect(&Endpoint::Unix(socket.into())).await?;
    match client.send_otp(otp, phone, sender).await? {
        Ok(sid) => println!("sent: {sid}"),
        Err(error) => println!("refused: {error}"),
    }
    Ok(())
}
