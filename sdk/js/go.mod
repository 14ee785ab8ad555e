module github.com/parleychat/parley/sdk/js

go 1.26.0

// npm's folder: no Go packages, and some npm packages ship .go files that
// `go test work` would otherwise try to build.
ignore ./node_modules
