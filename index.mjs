// ES module entry: the same objects as the CommonJS entry (one module instance, one addon).
import llmpool from './index.js'

export const { Client, ChatStream, EventStream, LlmpoolError } = llmpool
export default llmpool
