package cassandrastore

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

// migrationFiles are the schema versions, applied in order by Migrate. A
// file that has been released is never edited (Migrate compares a checksum
// of its statements; comments and layout may change); a schema change is a
// new file with the next number. Every statement must be idempotent (IF
// NOT EXISTS, ALTER TABLE ... ADD IF NOT EXISTS), because a migration that
// failed half way is applied again from its first statement.
//
//go:embed migrations/*.cql
var migrationFiles embed.FS

type migration struct {
	version    int
	name       string // file name
	statements []string
	checksum   string
}

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.cql$`)

// migrations reads and parses the embedded files, in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name must look like 0001_description.cql", e.Name())
		}
		version, _ := strconv.Atoi(m[1])
		text, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		stmts, err := splitStatements(string(text))
		if err != nil {
			return nil, fmt.Errorf("parse migration %s: %w", e.Name(), err)
		}
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s has no statements", e.Name())
		}
		out = append(out, migration{version: version, name: e.Name(), statements: stmts, checksum: checksum(stmts)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].name, out[i].name, out[i].version)
		}
	}
	return out, nil
}

// checksum identifies a migration by its statements without comments or
// whitespace, so that editing comments or layout does not count as a
// change.
func checksum(stmts []string) string {
	h := sha256.New()
	for _, s := range stmts {
		h.Write([]byte(strings.Join(strings.Fields(s), "")))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// splitStatements cuts CQL text at the semicolons that end statements,
// dropping comments (--, //, /* */) and keeping quoted text intact: string
// literals in single quotes (a doubled quote escapes one), quoted
// identifiers in double quotes, and $$ strings.
func splitStatements(text string) ([]string, error) {
	var (
		out []string
		cur strings.Builder
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(text); {
		rest := text[i:]
		switch {
		case strings.HasPrefix(rest, "--"), strings.HasPrefix(rest, "//"):
			end := strings.IndexByte(rest, '\n')
			if end < 0 {
				end = len(rest)
			}
			cur.WriteByte(' ')
			i += end
		case strings.HasPrefix(rest, "/*"):
			end := strings.Index(rest[2:], "*/")
			if end < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			cur.WriteByte(' ')
			i += 2 + end + 2
		case rest[0] == '\'':
			n, err := quotedLen(rest, '\'')
			if err != nil {
				return nil, err
			}
			cur.WriteString(rest[:n])
			i += n
		case rest[0] == '"':
			n, err := quotedLen(rest, '"')
			if err != nil {
				return nil, err
			}
			cur.WriteString(rest[:n])
			i += n
		case strings.HasPrefix(rest, "$$"):
			end := strings.Index(rest[2:], "$$")
			if end < 0 {
				return nil, errors.New("unterminated $$ string")
			}
			cur.WriteString(rest[:2+end+2])
			i += 2 + end + 2
		case rest[0] == ';':
			flush()
			i++
		default:
			cur.WriteByte(rest[0])
			i++
		}
	}
	flush()
	return out, nil
}

// quotedLen is the length of the quoted token at the start of s, where a
// doubled quote stands for one quote.
func quotedLen(s string, q byte) (int, error) {
	for i := 1; i < len(s); i++ {
		if s[i] != q {
			continue
		}
		if i+1 < len(s) && s[i+1] == q {
			i++
			continue
		}
		return i + 1, nil
	}
	return 0, fmt.Errorf("unterminated %c quote", q)
}

// Migrate brings cfg's keyspace to the newest schema: it creates the
// keyspace when missing (with cfg's replication), then the
// schema_migrations table, applies every migration not recorded there in
// version order, statement by statement, and waits for the cluster to
// agree on the schema after each. Running it again, or from two places in
// turn, is harmless. It also records cfg.BucketSize in a new keyspace and
// refuses one that disagrees with an existing keyspace.
//
// Run it from one place at a time (a deploy job, or the one instance
// started with -migrate): concurrent table creation on different
// coordinators can leave the cluster with conflicting schema versions.
func Migrate(ctx context.Context, cfg Config) error {
	cfg, cons, err := cfg.normalized()
	if err != nil {
		return err
	}
	admin, err := connect(cfg, cons, "", migrationTimeout)
	if err != nil {
		return err
	}
	err = createKeyspace(ctx, admin, cfg)
	admin.Close()
	if err != nil {
		return err
	}
	sess, err := connect(cfg, cons, cfg.Keyspace, migrationTimeout)
	if err != nil {
		return err
	}
	defer sess.Close()
	if err := applyMigrations(ctx, sess, cfg.Keyspace); err != nil {
		return err
	}
	_, err = settleBucketSize(ctx, sess, cfg, true)
	return err
}

// connect opens a session; keyspace may be empty.
func connect(cfg Config, cons gocql.Consistency, keyspace string, timeout time.Duration) (*gocql.Session, error) {
	sess, err := cluster(cfg, cons, keyspace, timeout).CreateSession()
	if err != nil {
		where := "cassandra at " + strings.Join(cfg.Hosts, ",")
		if keyspace != "" {
			where += " (keyspace " + keyspace + ")"
		}
		return nil, fmt.Errorf("connect to %s: %w", where, err)
	}
	return sess, nil
}

// replication is the keyspace's replication map in CQL.
func replication(cfg Config) string {
	if len(cfg.Datacenters) == 0 {
		return fmt.Sprintf("{'class': 'SimpleStrategy', 'replication_factor': %d}", cfg.ReplicationFactor)
	}
	parts := []string{"'class': 'NetworkTopologyStrategy'"}
	for _, dc := range cfg.Datacenters {
		parts = append(parts, fmt.Sprintf("'%s': %d", dc, cfg.ReplicationFactor))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func createKeyspace(ctx context.Context, admin *gocql.Session, cfg Config) error {
	stmt := fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s AND durable_writes = true", cfg.Keyspace, replication(cfg))
	if err := admin.Query(stmt).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("create keyspace %s: %w", cfg.Keyspace, err)
	}
	if err := admin.AwaitSchemaAgreement(ctx); err != nil {
		return fmt.Errorf("schema agreement after creating keyspace %s: %w", cfg.Keyspace, err)
	}
	return nil
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int PRIMARY KEY,
    name       text,
    checksum   text,
    applied_at timestamp
) WITH comment = 'Applied cassandrastore migrations'`

// applyMigrations applies the pending migrations with a session bound to
// the keyspace.
func applyMigrations(ctx context.Context, sess *gocql.Session, keyspace string) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	return applyThese(ctx, sess, keyspace, all)
}

// applyThese applies those of the given migrations that are pending; tests
// use it to build a keyspace as an older release left it.
func applyThese(ctx context.Context, sess *gocql.Session, keyspace string, all []migration) error {
	if err := sess.Query(createMigrationsTable).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("create %s.schema_migrations: %w", keyspace, err)
	}
	if err := sess.AwaitSchemaAgreement(ctx); err != nil {
		return fmt.Errorf("schema agreement after creating %s.schema_migrations: %w", keyspace, err)
	}
	applied, err := appliedMigrations(ctx, sess, keyspace)
	if err != nil {
		return err
	}
	for _, m := range all {
		if sum, ok := applied[m.version]; ok {
			if sum != m.checksum {
				return fmt.Errorf("migration %s was applied to %s with checksum %s but this build has %s: released migrations must not change; add a new one", m.name, keyspace, sum, m.checksum)
			}
			continue
		}
		for i, stmt := range m.statements {
			if err := sess.Query(stmt).WithContext(ctx).Exec(); err != nil {
				return fmt.Errorf("migration %s on %s, statement %d (%.60s...): %w", m.name, keyspace, i+1, strings.Join(strings.Fields(stmt), " "), err)
			}
		}
		if err := sess.AwaitSchemaAgreement(ctx); err != nil {
			return fmt.Errorf("schema agreement after migration %s on %s: %w", m.name, keyspace, err)
		}
		if err := sess.Query(`INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)`,
			m.version, m.name, m.checksum, time.Now()).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("record migration %s on %s: %w", m.name, keyspace, err)
		}
	}
	return nil
}

// appliedMigrations maps each applied version to its checksum.
func appliedMigrations(ctx context.Context, sess *gocql.Session, keyspace string) (map[int]string, error) {
	applied := map[int]string{}
	iter := sess.Query(`SELECT version, checksum FROM schema_migrations`).WithContext(ctx).Iter()
	var (
		v   int
		sum string
	)
	for iter.Scan(&v, &sum) {
		applied[v] = sum
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read %s.schema_migrations: %w", keyspace, err)
	}
	return applied, nil
}

// checkSchema fails unless every embedded migration has been applied.
func checkSchema(ctx context.Context, sess *gocql.Session, keyspace string) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	applied, err := appliedMigrations(ctx, sess, keyspace)
	if err != nil {
		return fmt.Errorf("%w (was the keyspace migrated? start parley-persistence once with -migrate / PARLEY_MIGRATE=1)", err)
	}
	for _, m := range all {
		if _, ok := applied[m.version]; !ok {
			return fmt.Errorf("keyspace %s lacks migration %s: start parley-persistence once with -migrate (PARLEY_MIGRATE=1)", keyspace, m.name)
		}
	}
	return nil
}

// settleBucketSize returns the keyspace's bucket size. With record (during
// Migrate) a keyspace without one gets cfg's; either way a configured
// size that differs from the recorded one is an error.
func settleBucketSize(ctx context.Context, sess *gocql.Session, cfg Config, record bool) (int, error) {
	var stored string
	if record {
		want := cfg.BucketSize
		if want == 0 {
			want = DefaultBucketSize
		}
		// A lightweight transaction, once per keyspace: two migrators must
		// not record different sizes.
		prev := map[string]any{}
		applied, err := sess.Query(`INSERT INTO store_settings (name, value) VALUES ('bucket_size', ?) IF NOT EXISTS`,
			strconv.Itoa(want)).WithContext(ctx).MapScanCAS(prev)
		if err != nil {
			return 0, fmt.Errorf("record bucket size in %s.store_settings: %w", cfg.Keyspace, err)
		}
		if applied {
			stored = strconv.Itoa(want)
		} else {
			stored, _ = prev["value"].(string)
		}
	} else {
		err := sess.Query(`SELECT value FROM store_settings WHERE name = 'bucket_size'`).WithContext(ctx).Scan(&stored)
		if errors.Is(err, gocql.ErrNotFound) {
			return 0, fmt.Errorf("keyspace %s has no bucket size recorded: start parley-persistence once with -migrate (PARLEY_MIGRATE=1)", cfg.Keyspace)
		}
		if err != nil {
			return 0, fmt.Errorf("read bucket size from %s.store_settings: %w", cfg.Keyspace, err)
		}
	}
	n, err := strconv.Atoi(stored)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("keyspace %s records bucket size %q, which is not a positive number", cfg.Keyspace, stored)
	}
	if cfg.BucketSize != 0 && cfg.BucketSize != n {
		return 0, fmt.Errorf("keyspace %s stores history in buckets of %d events but the configuration asks for %d: the bucket size cannot change once data is written", cfg.Keyspace, n, cfg.BucketSize)
	}
	return n, nil
}
