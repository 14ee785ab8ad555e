package edge

import (
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"

	sdkjs "github.com/parleychat/parley/sdk/js"
)

var (
	scriptTag    = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`)
	preloadTag   = regexp.MustCompile(`<link rel="modulepreload" href="([^"]+)">`)
	importFrom   = regexp.MustCompile(`(?m)^import .* from '([^']+)';$`)
	domReference = regexp.MustCompile(`\b(document|window)\b|getElementById|querySelector`)
)

// TestPageModules: the page is served as it is embedded, index.html with
// no inline script and ES modules with a JavaScript type (a browser runs
// a module served as anything else not at all); every import and preload
// names an embedded module, every module is preloaded, and the protocol
// client and the store stay clear of the DOM.
func TestPageModules(t *testing.T) {
	srv := httptest.NewServer(pageHandler())
	defer srv.Close()
	get := func(p string) (string, string) {
		t.Helper()
		res, err := http.Get(srv.URL + "/" + p)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET /%s: %s", p, res.Status)
		}
		mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
		return string(body), mt
	}

	page, ctype := get("")
	if ctype != "text/html" {
		t.Fatalf("GET /: Content-Type %q", ctype)
	}
	var entry []string
	for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
		if lines := strings.Count(strings.TrimSpace(m[2]), "\n") + 1; strings.TrimSpace(m[2]) != "" && lines > 3 {
			t.Errorf("index.html has an inline script of %d lines", lines)
		}
		if strings.Contains(m[1], `type="module"`) {
			entry = append(entry, m[1])
		}
	}
	if len(entry) != 1 || !strings.Contains(entry[0], `src="app.js"`) {
		t.Fatalf("index.html's module scripts: %q, want one, app.js", entry)
	}

	modules := map[string]bool{}
	err := fs.WalkDir(webui, "webui", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".js") {
			modules[strings.TrimPrefix(p, "webui/")] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"app.js", "protocol.js", "store.js", "view/list.js", "view/chat.js", "view/forms.js"} {
		if !modules[want] {
			t.Errorf("%s is not embedded", want)
		}
	}
	preloaded := map[string]bool{}
	for _, m := range preloadTag.FindAllStringSubmatch(page, -1) {
		if !modules[m[1]] {
			t.Errorf("index.html preloads %s, which is not embedded", m[1])
		}
		preloaded[m[1]] = true
	}
	for p := range modules {
		src, ctype := get(p)
		if ctype != "text/javascript" && ctype != "application/javascript" {
			t.Errorf("GET /%s: Content-Type %q, want JavaScript", p, ctype)
		}
		if p != "app.js" && !preloaded[p] {
			t.Errorf("index.html does not preload %s", p)
		}
		for _, m := range importFrom.FindAllStringSubmatch(src, -1) {
			if sdkPath, ok := strings.CutPrefix(m[1], "/sdk/"); ok {
				if _, err := fs.Stat(sdkjs.Browser(), sdkPath); err != nil {
					t.Errorf("%s imports %s, which the SDK does not have: %v", p, m[1], err)
				}
				continue
			}
			if dep := path.Join(path.Dir(p), m[1]); !modules[dep] {
				t.Errorf("%s imports %s, which is not embedded", p, dep)
			}
		}
		if (p == "protocol.js" || p == "store.js") && domReference.MatchString(src) {
			t.Errorf("%s refers to the DOM: %q", p, domReference.FindString(src))
		}
	}
	if _, ctype := get("css/parley.css"); ctype != "text/css" {
		t.Errorf("GET /css/parley.css: Content-Type %q", ctype)
	}
}

// TestSDKModules: the JavaScript SDK is served at /sdk/ as JavaScript, and
// its modules import one another by relative paths, which a browser
// resolves without an import map.
func TestSDKModules(t *testing.T) {
	srv := httptest.NewServer(sdkHandler())
	defer srv.Close()
	files, err := fs.Glob(sdkjs.Browser(), "*.js")
	if err != nil || len(files) == 0 {
		t.Fatalf("SDK files: %v %v", files, err)
	}
	served := map[string]bool{}
	for _, f := range files {
		res, err := http.Get(srv.URL + "/sdk/" + f)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
		if res.StatusCode != http.StatusOK || (mt != "text/javascript" && mt != "application/javascript") {
			t.Errorf("GET /sdk/%s: %s, Content-Type %q", f, res.Status, mt)
		}
		served[f] = true
		for _, m := range importFrom.FindAllStringSubmatch(string(body), -1) {
			// codec-proto.js, the binary codec, is imported lazily and
			// only by a page that resolves @bufbuild/protobuf itself.
			if !strings.HasPrefix(m[1], "./") && f != "codec-proto.js" {
				t.Errorf("%s imports %s statically: the page cannot resolve a package name", f, m[1])
			}
		}
	}
	if !served["index.js"] {
		t.Error("the SDK has no index.js")
	}
}
