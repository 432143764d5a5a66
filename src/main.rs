use std::process::ExitCode;

fn main() -> ExitCode {
    match vdiskview::cli::run() {
        Ok(code) => code,
        Err(e) => {
            // one line: the whole cause chain joined, as scripts expect
            let msg = format!("{:#}", e).replace('\n', " ");
            eprintln!("vdiskview: {}", msg);
            ExitCode::from(1)
        }
    }
}
