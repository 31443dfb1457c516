/**
 * A small XML well-formedness checker for the testnet report's files (no XML parser is among
 * the project's dependencies): every element closed in order, attributes quoted and unique,
 * `<` and `&` only where they may be, one root element. The report's HTML is written to pass it
 * too (void elements self-closed); `<style>` and `<script>` hold raw text.
 */

/** What a document holds. */
export interface XmlDocument {
  root: string
  /** elements by name, with how many */
  elements: Map<string, number>
  /** every element's attributes, in document order */
  attributes: Array<{ element: string, attributes: Record<string, string> }>
  /** the text content, entities decoded, in document order */
  text: string
}

/** Thrown when the document is not well-formed. */
export class XmlError extends Error {
  override readonly name = 'XmlError'
}

const NAME = /^[A-Za-z_:][A-Za-z0-9_:.-]*$/
const ENTITY = /&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9A-Fa-f]+);/y
const RAW_TEXT = new Set(['style', 'script'])

function decode (text: string, where: number): string {
  let out = ''
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string
    if (c === '<') throw new XmlError(`a raw "<" at ${where + i}`)
    if (c !== '&') { out += c; continue }
    ENTITY.lastIndex = i
    const m = ENTITY.exec(text)
    if (m == null) throw new XmlError(`a bare "&" at ${where + i}: ${JSON.stringify(text.slice(i, i + 12))}`)
    const e = m[0]
    out += e === '&amp;' ? '&' : e === '&lt;' ? '<' : e === '&gt;' ? '>' : e === '&quot;' ? '"' : e === '&apos;' ? "'" : String.fromCodePoint(e[2] === 'x' ? parseInt(e.slice(3, -1), 16) : parseInt(e.slice(2, -1), 10))
    i += e.length - 1
  }
  return out
}

/** Parses `text` as XML; throws {@link XmlError} at the first fault. */
export function parseXml (text: string): XmlDocument {
  const stack: string[] = []
  const elements = new Map<string, number>()
  const attributes: XmlDocument['attributes'] = []
  let root: string | undefined
  let content = ''
  let i = 0
  while (i < text.length) {
    const lt = text.indexOf('<', i)
    const chunk = text.slice(i, lt < 0 ? text.length : lt)
    if (stack.length === 0) {
      if (chunk.trim() !== '') throw new XmlError(`text outside the root element at ${i}: ${JSON.stringify(chunk.slice(0, 30))}`)
    } else {
      content += decode(chunk, i)
    }
    if (lt < 0) break
    i = lt
    if (text.startsWith('<?', i)) {
      const end = text.indexOf('?>', i)
      if (end < 0) throw new XmlError(`unclosed processing instruction at ${i}`)
      i = end + 2
      continue
    }
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i)
      if (end < 0) throw new XmlError(`unclosed comment at ${i}`)
      i = end + 3
      continue
    }
    if (text.startsWith('<![CDATA[', i)) {
      const end = text.indexOf(']]>', i)
      if (end < 0) throw new XmlError(`unclosed CDATA at ${i}`)
      content += text.slice(i + 9, end)
      i = end + 3
      continue
    }
    if (text.startsWith('<!', i)) {
      if (root != null) throw new XmlError(`a declaration after the root element at ${i}`)
      const end = text.indexOf('>', i)
      if (end < 0) throw new XmlError(`unclosed declaration at ${i}`)
      i = end + 1
      continue
    }
    const end = text.indexOf('>', i)
    if (end < 0) throw new XmlError(`unclosed tag at ${i}`)
    const tag = text.slice(i + 1, end)
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim()
      const open = stack.pop()
      if (open !== name) throw new XmlError(`</${name}> at ${i} closes <${open ?? 'nothing'}>`)
      i = end + 1
      continue
    }
    const selfClosing = tag.endsWith('/')
    const body = selfClosing ? tag.slice(0, -1) : tag
    const name = /^\S+/.exec(body)?.[0] ?? ''
    if (!NAME.test(name)) throw new XmlError(`bad element name ${JSON.stringify(name)} at ${i}`)
    if (stack.length === 0) {
      if (root != null) throw new XmlError(`a second root element <${name}> at ${i}`)
      root = name
    }
    const attrs: Record<string, string> = {}
    const rest = body.slice(name.length)
    const ATTR = /\s+([A-Za-z_:][A-Za-z0-9_:.-]*)\s*=\s*("([^"<]*)"|'([^'<]*)')/y
    let j = 0
    while (j < rest.length) {
      if (/^\s*$/.test(rest.slice(j))) break
      ATTR.lastIndex = j
      const m = ATTR.exec(rest)
      if (m == null) throw new XmlError(`bad attribute in <${name}> at ${i + 1 + name.length + j}: ${JSON.stringify(rest.slice(j, j + 30))}`)
      const key = m[1] as string
      if (Object.hasOwn(attrs, key)) throw new XmlError(`duplicate attribute ${key} in <${name}> at ${i}`)
      attrs[key] = decode(m[3] ?? m[4] ?? '', i)
      j = ATTR.lastIndex
    }
    elements.set(name, (elements.get(name) ?? 0) + 1)
    attributes.push({ element: name, attributes: attrs })
    i = end + 1
    if (selfClosing) continue
    if (RAW_TEXT.has(name.toLowerCase())) {
      const close = text.indexOf(`</${name}>`, i)
      if (close < 0) throw new XmlError(`unclosed <${name}> at ${i}`)
      i = close + name.length + 3
      continue
    }
    stack.push(name)
  }
  if (stack.length > 0) throw new XmlError(`unclosed <${stack.join('>, <')}> at the end`)
  if (root == null) throw new XmlError('no root element')
  return { root, elements, attributes, text: content }
}
