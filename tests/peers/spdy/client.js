#!/usr/bin/env node
// An independent SPDY/3.1 peer for crishim's tests: the spdy-transport package
// (not our code) drives exec, attach and port-forward against a streaming URL.
//
//   node client.js exec|attach URL [--stdin] [--stdout] [--stderr] [--tty]
//                                  [--resize WxH] [--protocol P ...]
//     stdin of this process -> the stdin stream; stdout/stderr streams -> ours;
//     exits with the remote exit code (v4 Status), prints a failure on stderr.
//   node client.js portforward URL --port P [--port P ...] [--count N] [--send TEXT]
//     opens N connections per port at once, sends TEXT, prints a JSON array of
//     {port, data, error} once every connection ended.
'use strict'

const http = require('http')
const transport = require('spdy-transport')

function parseArgs (argv) {
  const opts = { mode: argv[0], url: argv[1], ports: [], protocols: [], count: 1, send: '' }
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--port') opts.ports.push(Number(argv[++i]))
    else if (a === '--protocol') opts.protocols.push(argv[++i])
    else if (a === '--count') opts.count = Number(argv[++i])
    else if (a === '--send') opts.send = argv[++i]
    else if (a === '--resize') opts.resize = argv[++i].split('x').map(Number)
    else opts[a.replace(/^--/, '')] = true
  }
  return opts
}

function upgrade (url, protocols) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'SPDY/3.1',
        'X-Stream-Protocol-Version': protocols
      }
    })
    req.on('upgrade', (res, socket, head) => {
      if (head && head.length) socket.unshift(head)
      resolve({ socket, protocol: res.headers['x-stream-protocol-version'] })
    })
    req.on('response', (res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)))
    req.on('error', reject)
    req.end()
  })
}

function session (socket) {
  const conn = transport.connection.create(socket, { protocol: 'spdy', isServer: false })
  conn.start(3.1)
  return conn
}

function open (conn, headers) {
  return new Promise((resolve, reject) => {
    conn.request({ method: 'POST', path: '/', host: 'crishim', headers }, (err, stream) => {
      if (err) reject(err)
      else resolve(stream)
    })
  })
}

function collect (stream) {
  return new Promise((resolve) => {
    const chunks = []
    stream.on('data', (c) => chunks.push(c))
    stream.on('end', () => resolve(Buffer.concat(chunks)))
    stream.on('error', () => resolve(Buffer.concat(chunks)))
    stream.resume()
  })
}

async function remoteCommand (opts) {
  const protocols = opts.protocols.length ? opts.protocols : ['v4.channel.k8s.io']
  const { socket } = await upgrade(opts.url, protocols)
  const conn = session(socket)
  const error = await open(conn, { streamType: 'error' })
  error.end()
  const errorText = collect(error)
  const pending = []
  let stdin = null
  if (opts.stdin) stdin = await open(conn, { streamType: 'stdin' })
  if (opts.stdout) {
    const s = await open(conn, { streamType: 'stdout' })
    s.end()
    s.pipe(process.stdout, { end: false })
    pending.push(new Promise((resolve) => s.on('end', resolve)))
  }
  if (opts.stderr) {
    const s = await open(conn, { streamType: 'stderr' })
    s.end()
    s.pipe(process.stderr, { end: false })
    pending.push(new Promise((resolve) => s.on('end', resolve)))
  }
  if (opts.tty) {
    const resize = await open(conn, { streamType: 'resize' })
    if (opts.resize) resize.write(JSON.stringify({ Width: opts.resize[0], Height: opts.resize[1] }))
  }
  if (stdin) process.stdin.pipe(stdin)
  await Promise.all(pending)
  const text = (await errorText).toString()
  socket.destroy()
  if (!text) process.exit(0)
  let status
  try { status = JSON.parse(text) } catch (e) { status = null }
  if (status && status.status === 'Success') process.exit(0)
  process.stderr.write(`STATUS: ${text}\n`)
  if (status && status.reason === 'NonZeroExitCode') {
    process.exit(Number(status.details.causes.find((c) => c.reason === 'ExitCode').message))
  }
  process.exit(126)
}

async function portForward (opts) {
  const { socket } = await upgrade(opts.url, ['portforward.k8s.io'])
  const conn = session(socket)
  let requestId = 0
  const jobs = []
  for (const port of opts.ports) {
    for (let i = 0; i < opts.count; i++) {
      const id = String(requestId++)
      jobs.push((async () => {
        const headers = { port: String(port), requestID: id }
        const error = await open(conn, { ...headers, streamType: 'error' })
        error.end()
        const errorText = collect(error)
        const data = await open(conn, { ...headers, streamType: 'data' })
        const body = collect(data)
        data.end(opts.send)
        return { port, data: (await body).toString(), error: (await errorText).toString() }
      })())
    }
  }
  const results = await Promise.all(jobs)
  process.stdout.write(JSON.stringify(results))
  socket.destroy()
  process.exit(0)
}

const opts = parseArgs(process.argv.slice(2))
const run = opts.mode === 'portforward' ? portForward : remoteCommand
run(opts).catch((err) => {
  process.stderr.write(`CLIENT ERROR: ${err.stack || err}\n`)
  process.exit(125)
})
