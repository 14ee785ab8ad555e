// Package sdkjs holds the JavaScript SDK's browser files for the edge,
// which serves them at /sdk/ so the web page imports the SDK as an ES
// module. It is a module of its own because go:embed cannot reach outside
// the embedding module's folder.
package sdkjs

import (
	"embed"
	"io/fs"
)

// The SDK's ES modules as they are written: no build step between.
//
//go:embed src/*.js
var files embed.FS

// Browser returns the SDK's ES modules rooted at src/: index.js and what
// it imports. codec-proto.js among them imports @bufbuild/protobuf, which
// a page resolves only if it uses the binary subprotocol.
func Browser() fs.FS {
	sub, err := fs.Sub(files, "src")
	if err != nil {
		panic(err) // src is embedded above: unreachable
	}
	return sub
}
