fn main() -> std::process::ExitCode {
    lab_runtime::launch::main(notifications::run)
}
