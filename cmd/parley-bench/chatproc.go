package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
)

// The storm's chatters run in a process of their own: they stand for
// other users' devices, and in the storm client's process their reads
// and sends would wait behind its thousand dialers' goroutines, measuring
// the load generator rather than the server.
//
// The child is this binary with chatChildEnv set. It reads its settings
// from the environment, prints "ready" once chatting, takes "mark" and
// "stop" lines on stdin, and answers "stop" with a chatResult as JSON.
const chatChildEnv = "PARLEY_BENCH_CHAT_CHILD"

type chatResult struct {
	Before   stats.Percentiles `json:"before"`
	During   stats.Percentiles `json:"during"`
	Lost     int               `json:"lost"`
	BySecond []float64         `json:"by_second"`
	// SleepLag is how late a 1 ms sleep of the chatters' process woke
	// between the marks: if it is small, the chatters' latency is the
	// server's, not their own process's.
	SleepLag stats.Percentiles `json:"sleep_lag_ms"`
}

// chatProc is the parent's handle on the child.
type chatProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startChatProc starts the chatters' process and waits until they chat.
func startChatProc(ctx context.Context, so stormOptions, url, runID string) (*chatProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("storm: chatters: %w", err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), chatChildEnv+"=1",
		"PARLEY_BENCH_CHAT_URL="+url, "PARLEY_BENCH_CHAT_RUN="+runID,
		"PARLEY_BENCH_CHAT_N="+strconv.Itoa(so.Chatters),
		"PARLEY_BENCH_CHAT_RATE="+strconv.FormatFloat(so.ChatRate, 'f', -1, 64))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("storm: chatters: %w", err)
	}
	p := &chatProc{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := p.out.ReadString('\n')
	if err != nil || line != "ready\n" {
		p.kill()
		return nil, fmt.Errorf("storm: chatters did not start: %q %v", line, err)
	}
	return p, nil
}

func (p *chatProc) mark() { _, _ = io.WriteString(p.in, "mark\n") }

// result stops the chatters and reads what they measured.
func (p *chatProc) result() (chatResult, error) {
	var r chatResult
	if _, err := io.WriteString(p.in, "stop\n"); err != nil {
		return r, fmt.Errorf("storm: chatters: %w", err)
	}
	line, err := p.out.ReadBytes('\n')
	if err != nil {
		return r, fmt.Errorf("storm: chatters' result: %w", err)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("storm: chatters' result: %w", err)
	}
	return r, nil
}

func (p *chatProc) kill() {
	p.in.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// chatChild is the child's main: it chats until told to stop.
func chatChild() error {
	ctx := context.Background()
	n, err := strconv.Atoi(os.Getenv("PARLEY_BENCH_CHAT_N"))
	if err != nil {
		return fmt.Errorf("chatters: PARLEY_BENCH_CHAT_N: %w", err)
	}
	rate, err := strconv.ParseFloat(os.Getenv("PARLEY_BENCH_CHAT_RATE"), 64)
	if err != nil {
		return fmt.Errorf("chatters: PARLEY_BENCH_CHAT_RATE: %w", err)
	}
	url, runID := os.Getenv("PARLEY_BENCH_CHAT_URL"), os.Getenv("PARLEY_BENCH_CHAT_RUN")
	minter, err := auth.NewHS256([]byte(benchSecret))
	if err != nil {
		return err
	}
	dial := func(ctx context.Context, user, device string) (*sdk.Client, error) {
		tok, err := minter.Mint(user, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return sdk.Dial(dctx, sdk.Options{URL: url, Token: tok, DeviceID: device, EventBuffer: 1 << 14})
	}
	ch, err := startChat(ctx, stormOptions{Chatters: n, ChatRate: rate}, dial, runID)
	if err != nil {
		return err
	}
	defer ch.stop()
	var probeMu sync.Mutex
	var lags []float64
	probing := false
	go func() {
		for {
			t := time.Now()
			time.Sleep(time.Millisecond)
			lag := float64(time.Since(t)-time.Millisecond) / 1e6
			probeMu.Lock()
			if probing {
				lags = append(lags, lag)
			}
			probeMu.Unlock()
		}
	}()
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "mark":
			ch.mark()
			probeMu.Lock()
			probing = !probing
			probeMu.Unlock()
		case "stop":
			time.Sleep(2 * time.Second) // deliveries of the last messages
			var r chatResult
			r.Before, r.During, r.Lost = ch.result()
			ch.mu.Lock()
			start := time.Time{}
			if len(ch.marks) > 0 {
				start = ch.marks[0]
			}
			ch.mu.Unlock()
			r.BySecond = ch.bySecond(start)
			probeMu.Lock()
			r.SleepLag = stats.Of(lags)
			probeMu.Unlock()
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			fmt.Println(string(b))
			return nil
		}
	}
	return errors.New("chatters: stdin closed before stop")
}
