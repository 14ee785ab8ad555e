// Package transport is the connection security every service behind the
// edge starts with: the internal gRPC mTLS files and the Kafka client's
// TLS and SASL, registered as flags together and opened together, so the
// mains of ingest, fan-out, persistence and presence wire them one way.
package transport

import (
	"flag"
	"log/slog"

	"github.com/parleychat/parley/pkg/server/kafkaconf"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Flags are the -tls-* flags of internal gRPC and the -kafka-* security
// flags, before parsing.
type Flags struct {
	internal mtls.Files
	kafka    *kafkaconf.Config
}

// Register adds the flags to fs.
func Register(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	mtls.Register(fs, &f.internal, "", "", "internal gRPC")
	f.kafka = kafkaconf.Register(fs)
	return f
}

// Open reads the parsed flags: the internal mTLS source (nil without
// files: plaintext) and the Kafka client options; the Kafka clients' own
// log, when asked for (-kafka-log-level), goes to log.
func (f *Flags) Open(log *slog.Logger) (*mtls.Source, []kgo.Opt, error) {
	// Both errors already name what failed ("tls: …", "kafka: …").
	src, err := mtls.OpenMutual(f.internal)
	if err != nil {
		return nil, nil, err
	}
	kc := *f.kafka
	kc.Log = log
	opts, err := kc.Opts()
	if err != nil {
		return nil, nil, err
	}
	return src, opts, nil
}
