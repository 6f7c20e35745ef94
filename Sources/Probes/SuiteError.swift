import AssayCommon

/// Why a suite file was refused. The description is one line, `FILE:LINE:COLUMN: message`
/// (line and column 1-based; the column counts Unicode scalars), so editors can jump to it.
public struct SuiteError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The file cannot be opened or read, or is not a regular file.
        case io
        /// Larger than `SuiteLoader.maxFileBytes`.
        case tooLarge
        /// Not valid UTF-8 (`offset` is the first bad byte).
        case notUTF8
        /// A line is not valid JSON.
        case syntax
        /// The first line is not a suite header, or a header field is invalid.
        case header
        /// `assay_suite` is not a version this Assay reads.
        case version
        /// `kind` is neither "probes" nor "triggers".
        case unknownKind
        /// A probe file where a trigger file was expected, or the reverse.
        case wrongKind
        /// A line is not a JSON object, or a field has the wrong type or an invalid value.
        case invalidField
        case missingField
        /// A required text field is empty or whitespace only (a trigger's `text` included).
        case emptyField
        /// A field the format does not define (names starting with `x_` are allowed).
        case unknownField
        /// The same key twice in one object.
        case duplicateKey
        /// The same id on two lines of one file.
        case duplicateID
        /// The same trigger text under two ids (a control equal to a trigger would hide it).
        case duplicateText
        case unknownMode
        /// No probes or triggers after the header.
        case emptySuite
        /// Two files in a suites directory declare the same name.
        case duplicateName
        /// No suite file of that name in the directory.
        case notFound
    }

    public let kind: Kind
    public let file: String
    public let line: Int?
    public let column: Int?
    /// Byte offset in the file, where one applies.
    public let offset: Int?
    public let message: String

    public init(_ kind: Kind, file: String, line: Int? = nil, column: Int? = nil, offset: Int? = nil, message: String) {
        self.kind = kind
        self.file = file
        self.line = line
        self.column = column
        self.offset = offset
        self.message = message
    }

    public var description: String {
        var location = file.terminalSafe
        if let line {
            location += ":\(line)"
            if let column { location += ":\(column)" }
        }
        return "\(location): \(message)"
    }
}
