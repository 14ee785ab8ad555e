package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one Parley process a tool started. It keeps its command line,
// so it can be killed and started again as the same instance (same
// addresses, same static member id), as a restarted pod would be.
type Proc struct {
	// Name is unique in the cluster (edge0, ingest1, ...); Role is the
	// service (edge, ingest, fanout, persistence, presence, or parley-run).
	Name, Role string
	// HTTPAddr is the process's -http address: an edge's WebSocket, the
	// other services' probes.
	HTTPAddr string
	// AdminAddr serves /readyz, /metrics and, with PARLEY_PPROF=1,
	// /debug/pprof: an edge's -admin address, HTTPAddr for the others.
	AdminAddr string
	bin       string
	args      []string
	env       []string
	logPath   string

	// mu guards cmd and exited, which each Start replaces.
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// NewProc describes a process; Start runs it. Its output is appended to
// logDir/name.log across restarts.
func NewProc(name, role, bin, httpAddr, logDir string, env []string, args ...string) *Proc {
	return &Proc{Name: name, Role: role, HTTPAddr: httpAddr, AdminAddr: httpAddr, bin: bin, args: args, env: env, logPath: filepath.Join(logDir, name+".log")}
}

// Start runs the process. The child is killed if the tool dies without
// stopping it, so a crashed run leaves no service behind to join the
// shared consumer groups.
func (p *Proc) Start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	fmt.Fprintf(logf, "---- %s start %s\n", time.Now().Format(time.RFC3339Nano), p.Name)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	return nil
}

func (p *Proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited
}

// PID is the process id of the latest start (0 if never started).
func (p *Proc) PID() int {
	cmd, _ := p.current()
	if cmd == nil {
		return 0
	}
	return cmd.Process.Pid
}

// Exited is closed when the latest start ends.
func (p *Proc) Exited() <-chan struct{} {
	_, exited := p.current()
	return exited
}

// Alive reports whether the latest start still runs.
func (p *Proc) Alive() bool {
	_, exited := p.current()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// WaitReady polls /readyz until it answers 200.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	exited := p.Exited()
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited during startup; last log lines:\n%s", p.Name, p.Tail(30))
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.AdminAddr+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s; last log lines:\n%s", p.Name, timeout, p.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop asks for a graceful exit and kills the process if it takes longer
// than grace.
func (p *Proc) Stop(grace time.Duration) {
	cmd, exited := p.current()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Kill sends SIGKILL (no cleanup, as a crash or an OOM kill) and waits
// until the process is gone.
func (p *Proc) Kill() {
	cmd, exited := p.current()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Tail is the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// LogPath is the file the process writes its output to.
func (p *Proc) LogPath() string { return p.logPath }

// PprofGet fetches a pprof endpoint of the process, e.g. "heap?gc=1".
func (p *Proc) PprofGet(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.AdminAddr+"/debug/pprof/"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pprof %s of %s: %w", path, p.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("pprof %s of %s: %w", path, p.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pprof %s of %s: %s (is PARLEY_PPROF=1 set?)", path, p.Name, resp.Status)
	}
	return body, nil
}

// ForeignProcs lists Parley service processes not in own (pids) and not
// this process. They join the same consumer groups on the same topics, so
// a tool's services would share partitions with them.
func ForeignProcs(own map[int]bool) []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || own[pid] || pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		switch name := strings.TrimSpace(string(comm)); name {
		case "parley-ingest", "parley-fanout", "parley-persiste", "parley-presence", "parley-edge":
			out = append(out, fmt.Sprintf("%s (pid %d)", name, pid))
		}
	}
	return out
}
