import ArgumentParser
import Foundation
import AssayCommon
import Pipeline
import Scan

/// Exit codes (README.md, "Exit codes"). The CLI is the only place that exits.
enum ExitStatus: Int32 {
    case clean = 0
    case findings = 1
    case invalidInput = 2
    case nothingScanned = 3
    case usage = 4
}

struct Assay: ParsableCommand {
    static let version = ScanPipeline.toolVersion
    static let configuration = CommandConfiguration(
        commandName: "assay",
        abstract: "Compare a fine-tuned transformer with its base and report where behaviour diverges.",
        discussion: """
        Exit codes: 0 clean, 1 findings, 2 invalid input or error, 3 nothing could be scanned, 4 usage.
        """,
        version: version,
        subcommands: [ScanCommand.self, TriggerSearchCommand.self, SweepCommand.self, BaselineCommand.self, Inspect.self, Audit.self, ManifestCommand.self, Suites.self, Tokenize.self, Detokenize.self, ChatTemplateCommand.self, Logits.self, Generate.self, DiffWeights.self, Bench.self, SweepWorkerCommand.self]
    )
}

/// Writes to standard error without buffering surprises.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Writes to standard output and flushes (reports are often piped).
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

@main
enum Main {
    static func main() {
        let command: ParsableCommand
        do {
            command = try Assay.parseAsRoot()
        } catch {
            // --help and --version are clean exits; everything else is a usage error (exit 4).
            let code = Assay.exitCode(for: error)
            if code == .success {
                emit(Assay.fullMessage(for: error))
                exit(ExitStatus.clean.rawValue)
            }
            printError(Assay.fullMessage(for: error))
            exit(ExitStatus.usage.rawValue)
        }
        do {
            var c = command
            try c.run()
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch ScanError.nothingToScan(let message) {
            printError("error: \(message)")
            exit(ExitStatus.nothingScanned.rawValue)
        } catch {
            // ArgumentParser's own outcomes (help for a bare `assay`, validation failures) keep
            // their meaning; any other error is invalid input or a failure: exit 2.
            switch Assay.exitCode(for: error) {
            case .success:
                emit(Assay.fullMessage(for: error))
                exit(ExitStatus.clean.rawValue)
            case .validationFailure:
                printError(Assay.fullMessage(for: error))
                exit(ExitStatus.usage.rawValue)
            default:
                printError("error: \(String(describing: error))")
                exit(ExitStatus.invalidInput.rawValue)
            }
        }
        exit(ExitStatus.clean.rawValue)
    }
}
